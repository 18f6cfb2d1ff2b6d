// `holdfast doctor`: can this host hold sessions, and if not, what one line fixes it. Each check
// tries the real thing where it can (a socket bound to a device, a connection to the listener).
// The checks are small functions (doctor/checks.ts) over what doctor/host.ts reads; this file
// runs them in order and says whether flows can be held.
import type { NetInterface, NetSnapshot } from './contracts.js';
import type { Placement } from './egress/roles.js';
import { checkAddon, checkEnv, checkIpv6, checkMptcp, checkListener, checkPolicyRouting, checkRoutes, checkRpFilter, checkSystemProxy, hostNet, policyCoverage, type Check } from './doctor/checks.js';
import { getStatus, readNumber, readRules, strictFirewalldRpfilter, tableDefaultVia } from './doctor/host.js';
import { loadAddon, type AddonState } from './native.js';
import { Monitor } from './net/monitor.js';
import type { ProxyEndpoint } from './pac.js';
import { backendFor, detectDesktop, systemExec } from './system/proxy.js';
import { strandedDesktopCheck } from './system/proxy-stranded.js';
import { readMptcpHost } from './system/mptcp-endpoints.js';

export type { Check, CheckStatus } from './doctor/checks.js';

export interface DoctorReport {
  /** true when a pinned flow survives a route change on this host */
  readonly canHoldSessions: boolean;
  readonly checks: readonly Check[];
}

export interface DoctorOptions {
  /** the listeners to try (GET /status) */
  readonly listeners: readonly ProxyEndpoint[];
  readonly env?: NodeJS.ProcessEnv;
  /** the interfaces (default: read now) */
  readonly snapshot?: NetSnapshot;
  readonly addon?: AddonState;
  /** where /proc/sys/net lives (tests) */
  readonly procSys?: string;
  /** skip the desktop proxy check (it runs desktop tools) */
  readonly systemProxy?: boolean;
  /** each interface's type, metered state and role under the config (issue 15) */
  readonly placementOf?: (i: NetInterface) => Placement;
}

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const env = o.env ?? process.env;
  const procSys = o.procSys ?? '/proc/sys';
  let snap = o.snapshot;
  if (!snap) {
    const m = new Monitor({ watch: false, pollMs: 0 });
    snap = m.current();
    m.close();
  }
  const h = hostNet(snap);
  const checks: Check[] = [];

  const addon = checkAddon(o.addon ?? loadAddon(), h);
  checks.push(...addon.checks, ...checkRoutes(h, o.placementOf));
  const rules = await readRules();
  const cov = await policyCoverage(h, rules, tableDefaultVia);
  const policy = checkPolicyRouting(h, rules, cov);
  const rp = checkRpFilter(h, (conf) => readNumber(`${procSys}/net/ipv4/conf/${conf}/rp_filter`), procSys, cov.covered, policy.policyCoversAll);
  checks.push(policy.check, rp.check);
  checks.push(checkIpv6(h, readNumber(`${procSys}/net/ipv6/conf/all/disable_ipv6`), strictFirewalldRpfilter()));
  if (process.platform === 'linux') checks.push(checkMptcp(snap, await readMptcpHost(procSys)));
  for (const ep of o.listeners) checks.push(checkListener(ep, await getStatus(ep)));
  const ep0 = o.listeners[0];
  if (ep0) checks.push(checkEnv(env, ep0));
  if (o.systemProxy !== false && ep0) {
    const name = detectDesktop(env);
    checks.push(checkSystemProxy(name ? { name, backend: backendFor(name), ctx: { exec: systemExec(env), env } } : undefined, ep0));
  }
  // a desktop left pointing at a holdfast that died
  if (o.systemProxy !== false) {
    const stranded = await strandedDesktopCheck({ env, listeners: o.listeners });
    if (stranded) checks.push(stranded);
  }

  const canHoldSessions = policy.policyCoversAll || (addon.bindingOk && !rp.strictBlocks);
  // With policy routing covering everything, a missing addon or strict rp_filter does not block.
  const final = policy.policyCoversAll ? checks.map((c) => (c.status === 'fail' ? { ...c, status: 'warn' as const } : c)) : checks;
  return { canHoldSessions, checks: final };
}

/** The report as text, one line per check and one per fix. */
export function formatReport(r: DoctorReport): string {
  const lines: string[] = [];
  for (const c of r.checks) {
    lines.push(`${`[${c.status}]`.padEnd(7)}${c.id}: ${c.summary}`);
    if (c.fix) lines.push(`       fix: ${c.fix}`);
  }
  lines.push(
    r.canHoldSessions
      ? 'holdfast can hold sessions on this host: flows stay on their interface across route changes.'
      : 'holdfast cannot hold sessions on this host yet: apply the fixes of the [fail] lines above.',
  );
  return lines.join('\n') + '\n';
}
