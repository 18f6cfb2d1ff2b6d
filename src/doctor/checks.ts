// The checks of `holdfast doctor`, one small function each, in the order the report lists them.
// Each takes what was read from the host (host.ts) and returns its lines; none reads the host
// itself except through what it is given, so each is tested alone (test/unit/doctor-checks).
//
// From KERNEL-NOTES: a flow holds across route changes when its socket is bound to the device and
// rp_filter is loose (or off), or when source policy routing (`from <addr> lookup <table>`)
// covers its address, whatever rp_filter says and even without the addon. Anything else stalls.
import type { NetInterface, NetSnapshot } from '../contracts.js';
import type { Placement } from '../egress/roles.js';
import type { AddonState } from '../native.js';
import { isLinkLocal } from '../net/addr.js';
import { bestDefault } from '../net/monitor.js';
import { endpointText, type ProxyEndpoint } from '../pac.js';
import { envProxyState } from '../system/env.js';
import { pointsAt, type Backend, type BackendContext } from '../system/proxy.js';
import type { RuleEntry, StatusAnswer } from './host.js';
import { mptcpHealth, type MptcpHostState } from '../system/mptcp-endpoints.js';

export type CheckStatus = 'ok' | 'info' | 'warn' | 'fail';

export interface Check {
  readonly id: string;
  readonly status: CheckStatus;
  /** one line: what was found */
  readonly summary: string;
  /** one line: what to do about it (absent when nothing to do) */
  readonly fix?: string;
  readonly data?: unknown;
}

/** The interfaces as the checks see them: the snapshot and the subsets they ask about. */
export interface HostNet {
  readonly snap: NetSnapshot;
  /** every interface but loopback */
  readonly nonLoop: readonly NetInterface[];
  /** up, with a default route */
  readonly withDefault: readonly NetInterface[];
  /** up, with an IPv4 default route and an IPv4 address */
  readonly withDefault4: readonly NetInterface[];
}

export function hostNet(snap: NetSnapshot): HostNet {
  const nonLoop = snap.interfaces.filter((i) => !i.loopback);
  const withDefault = nonLoop.filter((i) => i.up && i.defaultRoutes.length > 0);
  const withDefault4 = withDefault.filter((i) => i.defaultRoutes.some((r) => r.family === 4) && i.addresses.some((a) => a.family === 4));
  return { snap, nonLoop, withDefault, withDefault4 };
}

// ---- 1. the addon, and binding a socket to a device with it ------------------------------------

export function checkAddon(addon: AddonState, h: HostNet): { checks: Check[]; bindingOk: boolean } {
  if (!addon.ok) {
    return {
      bindingOk: false,
      checks: [
        {
          id: 'addon',
          status: 'fail',
          summary: `native addon not loaded (${addon.why}): flows are bound by source address only, which does not hold them across route changes`,
          fix: 'install a C compiler and python3 (Debian: apt install build-essential python3), then `npm rebuild holdfast`; or run `holdfast start --policy-routing`',
        },
      ],
    };
  }
  const targets = h.withDefault.length ? h.withDefault : h.snap.interfaces.filter((i) => i.loopback);
  const tried: string[] = [];
  const failed: string[] = [];
  for (const i of targets) {
    const family = i.addresses.some((a) => a.family === 4) || !i.addresses.some((a) => a.family === 6) ? 4 : 6;
    try {
      const fd = addon.addon.openBound(family, 0, i.name);
      addon.addon.closeFd(fd);
      tried.push(i.name);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failed.push(`${i.name}: ${e.code ?? e.message}`);
    }
  }
  const bindingOk = failed.length === 0 && tried.length > 0;
  const binding: Check = bindingOk
    ? { id: 'binding', status: 'ok', summary: `a TCP socket bound to ${tried.join(', ')} with SO_BINDTODEVICE (device binding works)` }
    : {
        id: 'binding',
        status: 'fail',
        summary: `binding a socket to a device failed: ${failed.join('; ') || 'no interface to try'}`,
        fix: failed.some((f) => f.includes('EPERM'))
          ? 'Linux before 5.7 lets only CAP_NET_RAW bind to a device: upgrade the kernel, or `sudo setcap cap_net_raw+ep "$(command -v node)"`'
          : 'see the error; `holdfast start --policy-routing` holds flows without device binding',
      };
  return { bindingOk, checks: [{ id: 'addon', status: 'ok', summary: 'native addon loaded' }, binding] };
}

// ---- 2. interfaces and default routes ----------------------------------------------------------

export function describeIf(i: NetInterface, snap: NetSnapshot, p?: Placement): string {
  const state = !i.up ? 'down' : i.carrier ? 'up' : 'up, no carrier';
  const addrs = i.addresses.map((a) => `${a.ip}/${a.prefixLen}`).join(' ') || 'no address';
  const b4 = bestDefault(snap, 4)?.ifname === i.name;
  const b6 = bestDefault(snap, 6)?.ifname === i.name;
  const routes = i.defaultRoutes
    .map((r) => `IPv${r.family} default${r.gateway ? ` via ${r.gateway}` : ''} metric ${r.metric}${(r.family === 4 ? b4 : b6) ? ' (best)' : ''}`)
    .join(', ');
  const role = p ? `; ${p.type}${p.metered ? ', metered' : ''}, role ${p.role}${p.roleBy === 'default' ? '' : ` (by ${p.roleBy})`}` : '';
  return `${i.name}: ${state}; ${addrs}; ${routes || 'no default route'}${role}`;
}

/** `placementOf`: each interface's type, metered state and role under the config (issue 15). */
export function checkRoutes(h: HostNet, placementOf?: (i: NetInterface) => Placement): Check[] {
  const out: Check[] = h.nonLoop.map((i) => {
    const p = placementOf?.(i);
    return { id: `interface:${i.name}`, status: 'info', summary: describeIf(i, h.snap, p), data: p ? { ...i, ...p } : i };
  });
  if (h.withDefault.length === 0) {
    out.push({ id: 'routes', status: 'warn', summary: 'no interface has a default route: there is nowhere to send flows', fix: 'connect to a network' });
  } else {
    const b4 = bestDefault(h.snap, 4)?.ifname;
    const b6 = bestDefault(h.snap, 6)?.ifname;
    out.push({
      id: 'routes',
      status: 'ok',
      summary: `default routes via ${h.withDefault.map((i) => i.name).join(', ')}; new flows go to ${b4 ?? '-'} (IPv4), ${b6 ?? '-'} (IPv6)`,
    });
  }
  return out;
}

// ---- 3. policy routing (read before rp_filter: it makes strict rp_filter harmless) --------------

export interface PolicyCoverage {
  /** interface names whose every address has a working rule */
  readonly covered: ReadonlySet<string>;
  /** per interface, the rules that work ("from 10.1.1.2 lookup 101") */
  readonly coverage: Record<string, string[]>;
}

/** Which interfaces' addresses have a `from <addr> lookup <table>` rule whose table routes out of them. */
export async function policyCoverage(
  h: HostNet,
  rules: readonly RuleEntry[] | undefined,
  tableDefaultVia: (family: 4 | 6, table: string, dev: string) => Promise<boolean>,
): Promise<PolicyCoverage> {
  const covered = new Set<string>();
  const coverage: Record<string, string[]> = {};
  if (!rules) return { covered, coverage };
  for (const i of h.withDefault) {
    const addrs = i.addresses.filter((a) => !(a.family === 6 && isLinkLocal(a.ip)) && i.defaultRoutes.some((r) => r.family === a.family));
    let all = addrs.length > 0;
    for (const a of addrs) {
      const r = rules.find((x) => x.family === a.family && x.src === a.ip && x.table !== 'main' && x.table !== 'local' && x.table !== 'default');
      if (r && (await tableDefaultVia(a.family, r.table, i.name))) (coverage[i.name] ??= []).push(`from ${a.ip} lookup ${r.table}`);
      else all = false;
    }
    if (all) covered.add(i.name);
  }
  return { covered, coverage };
}

export function checkPolicyRouting(h: HostNet, rules: readonly RuleEntry[] | undefined, cov: PolicyCoverage): { check: Check; policyCoversAll: boolean } {
  const { covered, coverage } = cov;
  const policyCoversAll = h.withDefault.length > 0 && h.withDefault.every((i) => covered.has(i.name));
  const ours = rules?.filter((r) => r.protocol === '73') ?? [];
  const rulesText = Object.values(coverage).flat().join('; ');
  let check: Check;
  if (!rules) {
    check = { id: 'policy-routing', status: 'info', summary: 'cannot read routing rules (`ip rule` failed: is iproute2 installed?)' };
  } else if (policyCoversAll) {
    check = {
      id: 'policy-routing',
      status: 'ok',
      summary: `source policy routing covers ${h.withDefault.map((i) => i.name).join(', ')}${ours.length ? ' (added by holdfast --policy-routing)' : ''}: ${rulesText}`,
      data: coverage,
    };
  } else if (covered.size > 0 || Object.keys(coverage).length > 0) {
    check = {
      id: 'policy-routing',
      status: 'warn',
      summary: `source policy routing covers only part of the interfaces: ${rulesText}`,
      fix: 'run `holdfast start --policy-routing` (it keeps one table per interface in step)',
      data: coverage,
    };
  } else {
    check = {
      id: 'policy-routing',
      status: 'info',
      summary: 'no source policy routing (`from <address> lookup <table>`): not needed for proxied flows while device binding works and rp_filter is loose',
      fix: 'needed without the addon or with strict rp_filter: `holdfast start --policy-routing` (CAP_NET_ADMIN); it also holds programs that do not use the proxy (their connections keep the interface they began on)',
    };
  }
  return { check, policyCoversAll };
}

// ---- 4. rp_filter ------------------------------------------------------------------------------

/**
 * The kernel uses max(conf/all, conf/<iface>); a new interface starts with conf/default. Strict
 * (1) hurts an interface that carries pinned flows once it is no longer the best route: its
 * replies fail the reverse-path check and are dropped. `read(name)` is conf/<name>/rp_filter.
 */
export function checkRpFilter(
  h: HostNet,
  read: (conf: string) => number | undefined,
  where: string,
  covered: ReadonlySet<string>,
  policyCoversAll: boolean,
): { check: Check; strictBlocks: boolean } {
  const all = read('all');
  const dflt = read('default');
  if (all === undefined) {
    return { strictBlocks: false, check: { id: 'rp_filter', status: 'info', summary: `cannot read ${where}/net/ipv4/conf/all/rp_filter (no IPv4?)` } };
  }
  const mode = (v: number) => (v === 1 ? 'strict' : v === 2 ? 'loose' : 'off');
  const per: Record<string, { iface: number | undefined; effective: number }> = {};
  for (const i of h.nonLoop) {
    if (!i.addresses.some((a) => a.family === 4)) continue;
    const v = read(i.name);
    per[i.name] = { iface: v, effective: Math.max(all, v ?? 0) };
  }
  const future = Math.max(all, dflt ?? 0);
  const strict = Object.entries(per).filter(([, v]) => v.effective === 1).map(([n]) => n);
  const relevant = strict.filter((n) => h.withDefault4.some((i) => i.name === n));
  const uncovered = relevant.filter((n) => !covered.has(n));
  const detail =
    `all=${all}, default=${dflt ?? '?'}; effective: ` +
    (Object.entries(per)
      .map(([n, v]) => `${n}=${v.effective} (${mode(v.effective)})`)
      .join(', ') || 'no IPv4 interface');
  const fix =
    'sudo sysctl -w net.ipv4.conf.all.rp_filter=2 (the kernel uses the larger of all and the interface\'s value, so this makes ' +
    'every interface loose; persist it in /etc/sysctl.d/90-holdfast.conf), or run `holdfast start --policy-routing`';
  const data = { all, default: dflt, interfaces: per };
  if (uncovered.length > 0) {
    const summary =
      `strict reverse-path filtering (rp_filter=1) on ${uncovered.join(', ')}: the host drops the replies of a flow pinned ` +
      `there once another interface has the better route (the flow stalls); ${detail}`;
    return { strictBlocks: true, check: { id: 'rp_filter', status: 'fail', summary, fix, data } };
  }
  if (relevant.length > 0) {
    return { strictBlocks: false, check: { id: 'rp_filter', status: 'ok', summary: `rp_filter strict on ${relevant.join(', ')}, but source policy routing covers it; ${detail}`, data } };
  }
  if (strict.length > 0 || future === 1) {
    const at = [strict.length ? `on ${strict.join(', ')} (no default route there now)` : '', future === 1 ? 'for new interfaces (max(all, default) = 1)' : '']
      .filter(Boolean)
      .join(' and ');
    const summary = `rp_filter strict ${at}: flows pinned there would stall after a route change; ${detail}`;
    return { strictBlocks: false, check: { id: 'rp_filter', status: policyCoversAll ? 'info' : 'warn', summary, fix, data } };
  }
  return { strictBlocks: false, check: { id: 'rp_filter', status: 'ok', summary: `rp_filter loose or off; ${detail}`, data } };
}

// ---- 5. IPv6 -----------------------------------------------------------------------------------

/** `disableIpv6`: net.ipv6.conf.all.disable_ipv6 (undefined: no IPv6); `firewalld`: its strict IPv6_rpfilter. */
export function checkIpv6(h: HostNet, disableIpv6: number | undefined, firewalld: string | undefined): Check {
  if (disableIpv6 === undefined || disableIpv6 === 1) {
    return { id: 'ipv6', status: 'info', summary: disableIpv6 === 1 ? 'IPv6 is disabled (net.ipv6.conf.all.disable_ipv6=1)' : 'IPv6 is not available' };
  }
  if (firewalld) {
    return {
      id: 'ipv6',
      status: 'warn',
      summary: `firewalld's IPv6_rpfilter=${firewalld} is a strict reverse-path filter for IPv6: pinned IPv6 flows stall after a route change`,
      fix: 'set IPv6_rpfilter=loose in /etc/firewalld/firewalld.conf (firewalld 1.3+) and reload, or run `holdfast start --policy-routing`',
    };
  }
  const global = h.nonLoop.filter((i) => i.addresses.some((a) => a.family === 6 && !isLinkLocal(a.ip)));
  const routed = global.filter((i) => i.defaultRoutes.some((r) => r.family === 6));
  return {
    id: 'ipv6',
    status: 'info',
    summary: global.length
      ? `IPv6 on ${global.map((i) => i.name).join(', ')}; default route via ${routed.map((i) => i.name).join(', ') || 'none'}`
      : 'IPv6 enabled, but no interface has a global address',
  };
}

// ---- 6. the listener ---------------------------------------------------------------------------

export function checkListener(ep: ProxyEndpoint, r: StatusAnswer): Check {
  const where = endpointText(ep);
  if (r.kind === 'holdfast') {
    const flows = (r.status.flows as unknown[]).length;
    const binder = r.status.binder;
    return {
      id: `listener:${where}`,
      status: binder === 'source' ? 'warn' : 'ok',
      summary: `holdfast answers at ${where} (${flows} live flow${flows === 1 ? '' : 's'}, binder ${String(binder)})`,
      ...(binder === 'source' ? { fix: 'that holdfast runs without the addon: rebuild it (`npm rebuild holdfast`) and restart, or restart with --policy-routing' } : {}),
    };
  }
  if (r.kind === 'none') {
    return { id: `listener:${where}`, status: 'warn', summary: `nothing listens at ${where} (${r.why})`, fix: `start it: holdfast start --listen ${where}` };
  }
  return {
    id: `listener:${where}`,
    status: 'warn',
    summary: `something that is not holdfast answers at ${where}: ${r.why}`,
    fix: 'stop it, or give holdfast another address (--listen / listen: in the config)',
  };
}

// ---- 7. environment variables ------------------------------------------------------------------

export function checkEnv(env: NodeJS.ProcessEnv, ep: ProxyEndpoint): Check {
  const e = envProxyState(env, ep);
  if (e.pointsAtHoldfast.length === 0 && e.elsewhere.length === 0) {
    return { id: 'env', status: 'info', summary: 'no proxy variables set in this shell', fix: 'eval "$(holdfast env)" (or `holdfast exec -- CMD` for one command)' };
  }
  if (e.elsewhere.length === 0) {
    return { id: 'env', status: 'ok', summary: `${e.pointsAtHoldfast.join(', ')} point at holdfast (${endpointText(ep)})` };
  }
  return {
    id: 'env',
    status: 'warn',
    summary: `${e.elsewhere.map((n) => `${n}=${e.set[n]}`).join(', ')} point elsewhere than holdfast (${endpointText(ep)})`,
    fix: 'eval "$(holdfast env)"',
  };
}

// ---- 8. the desktop's proxy setting ------------------------------------------------------------

/** `desktop`: the detected desktop (undefined: none) and its backend. */
export function checkSystemProxy(desktop: { name: string; backend: Backend; ctx: BackendContext } | undefined, ep: ProxyEndpoint): Check {
  if (!desktop) {
    return { id: 'system-proxy', status: 'info', summary: 'no desktop detected (XDG_CURRENT_DESKTOP): the system proxy setting was not checked' };
  }
  const { name, backend, ctx } = desktop;
  const why = backend.unavailable(ctx);
  if (why) return { id: 'system-proxy', status: 'info', summary: `${name}: ${why}` };
  try {
    const cur = backend.current(ctx);
    const at = cur.filter((c) => pointsAt(c, ep));
    const other = cur.filter((c) => c.mode !== 'none' && !pointsAt(c, ep));
    if (at.length && !other.length) return { id: 'system-proxy', status: 'ok', summary: `${name} proxy points at holdfast (${at.map((c) => `${c.scope}: ${c.mode}`).join(', ')})` };
    if (other.length) {
      return {
        id: 'system-proxy',
        status: 'warn',
        summary: `${name} proxy points elsewhere: ${other.map((c) => `${c.scope}: ${c.mode} ${c.pacUrl ?? c.http ?? ''}`).join(', ')}`,
        fix: 'holdfast system-proxy on',
      };
    }
    return { id: 'system-proxy', status: 'info', summary: `${name} proxy: none`, fix: 'holdfast system-proxy on (or holdfast start --system-proxy)' };
  } catch (err) {
    return { id: 'system-proxy', status: 'info', summary: `${name}: cannot read the proxy setting: ${(err as Error).message}` };
  }
}

/** MPTCP (`mptcp: on`): enabled, and a subflow endpoint for every usable address (Linux). */
export function checkMptcp(snap: NetSnapshot, host: MptcpHostState): Check {
  return { id: 'mptcp', ...mptcpHealth(snap, host) };
}

