// `holdfast doctor`: can this host hold sessions, and if not, what one line fixes it. Each check
// tries the real thing where it can (a socket bound to a device, a connection to the listener).
//
// From KERNEL-NOTES: a flow holds across route changes when its socket is bound to the device and
// rp_filter is loose (or off), or when source policy routing (`from <addr> lookup <table>`)
// covers its address, whatever rp_filter says and even without the addon. Anything else stalls.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import type { NetInterface, NetSnapshot } from './contracts.js';
import { loadAddon, type AddonState } from './native.js';
import { bestDefault, Monitor } from './net/monitor.js';
import { endpointText, type ProxyEndpoint } from './pac.js';
import { envProxyState } from './system/env.js';
import { backendFor, detectDesktop, pointsAt, systemExec } from './system/proxy.js';

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
}

// ---- reading the host ---------------------------------------------------------------------

function readNumber(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function ip(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('ip', args, { timeout: 5000 }, (err, stdout, stderr) => resolve({ ok: !err, stdout: String(stdout), stderr: String(stderr || (err as Error | null)?.message || '') }));
  });
}

interface RuleEntry {
  readonly family: 4 | 6;
  readonly src: string;
  readonly table: string;
  readonly priority: number;
  readonly protocol?: string;
}

/** `ip -j rule show` for both families; undefined when ip cannot be run. */
async function readRules(): Promise<RuleEntry[] | undefined> {
  const out: RuleEntry[] = [];
  for (const family of [4, 6] as const) {
    const r = await ip([`-${family}`, '-N', '-j', 'rule', 'show']);
    if (!r.ok) {
      if (family === 4) return undefined;
      continue;
    }
    if (!r.stdout.trim()) continue;
    for (const e of JSON.parse(r.stdout) as Array<{ priority?: number; src?: string; table?: string; protocol?: string }>) {
      if (!e.src || e.src === 'all' || !e.table) continue;
      out.push({ family, src: e.src, table: String(e.table), priority: e.priority ?? 0, ...(e.protocol ? { protocol: String(e.protocol) } : {}) });
    }
  }
  return out;
}

/** Does `table` have a default route out through `dev`? */
async function tableDefaultVia(family: 4 | 6, table: string, dev: string): Promise<boolean> {
  const r = await ip([`-${family}`, '-j', 'route', 'show', 'table', table]);
  if (!r.ok || !r.stdout.trim()) return false;
  return (JSON.parse(r.stdout) as Array<{ dst?: string; dev?: string }>).some((e) => e.dst === 'default' && e.dev === dev);
}

function getStatus(ep: ProxyEndpoint): Promise<{ kind: 'holdfast'; status: Record<string, unknown> } | { kind: 'other'; why: string } | { kind: 'none'; why: string }> {
  return new Promise((resolve) => {
    const req = request({ host: ep.host, port: ep.port, path: '/status', method: 'GET', timeout: 2000, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (body.length < 4_000_000) body += d;
      });
      res.on('end', () => {
        try {
          const status = JSON.parse(body) as Record<string, unknown>;
          if (res.statusCode === 200 && Array.isArray(status.interfaces) && Array.isArray(status.flows)) return resolve({ kind: 'holdfast', status });
        } catch {
          /* not JSON */
        }
        resolve({
          kind: 'other',
          why: res.statusCode === 407 ? 'GET /status answered 407 (proxy authentication required)' : `GET /status answered ${res.statusCode}, not holdfast's status`,
        });
      });
      res.on('error', (err) => resolve({ kind: 'other', why: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 2000 ms')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      resolve(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? { kind: 'none', why: err.code } : { kind: 'other', why: err.code ?? err.message });
    });
    req.end();
  });
}

function describeIf(i: NetInterface, snap: NetSnapshot): string {
  const state = !i.up ? 'down' : i.carrier ? 'up' : 'up, no carrier';
  const addrs = i.addresses.map((a) => `${a.ip}/${a.prefixLen}`).join(' ') || 'no address';
  const b4 = bestDefault(snap, 4)?.ifname === i.name;
  const b6 = bestDefault(snap, 6)?.ifname === i.name;
  const routes = i.defaultRoutes
    .map((r) => `IPv${r.family} default${r.gateway ? ` via ${r.gateway}` : ''} metric ${r.metric}${(r.family === 4 ? b4 : b6) ? ' (best)' : ''}`)
    .join(', ');
  return `${i.name}: ${state}; ${addrs}; ${routes || 'no default route'}`;
}

// ---- the checks ---------------------------------------------------------------------------

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const env = o.env ?? process.env;
  const procSys = o.procSys ?? '/proc/sys';
  const checks: Check[] = [];
  const push = (c: Check) => checks.push(c);

  let snap = o.snapshot;
  if (!snap) {
    const m = new Monitor({ watch: false, pollMs: 0 });
    snap = m.current();
    m.close();
  }
  const nonLoop = snap.interfaces.filter((i) => !i.loopback);
  const withDefault = nonLoop.filter((i) => i.up && i.defaultRoutes.length > 0);
  const withDefault4 = withDefault.filter((i) => i.defaultRoutes.some((r) => r.family === 4) && i.addresses.some((a) => a.family === 4));

  // 1. the addon, and binding a socket to a device with it
  const addon = o.addon ?? loadAddon();
  let bindingOk = false;
  if (!addon.ok) {
    push({
      id: 'addon',
      status: 'fail',
      summary: `native addon not loaded (${addon.why}): flows are bound by source address only, which does not hold them across route changes`,
      fix: 'install a C compiler and python3 (Debian: apt install build-essential python3), then `npm rebuild holdfast`; or run `holdfast start --policy-routing`',
    });
  } else {
    push({ id: 'addon', status: 'ok', summary: 'native addon loaded' });
    const targets = withDefault.length ? withDefault : snap.interfaces.filter((i) => i.loopback);
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
    bindingOk = failed.length === 0 && tried.length > 0;
    push(
      bindingOk
        ? { id: 'binding', status: 'ok', summary: `a TCP socket bound to ${tried.join(', ')} with SO_BINDTODEVICE (device binding works)` }
        : {
            id: 'binding',
            status: 'fail',
            summary: `binding a socket to a device failed: ${failed.join('; ') || 'no interface to try'}`,
            fix: failed.some((f) => f.includes('EPERM'))
              ? 'Linux before 5.7 lets only CAP_NET_RAW bind to a device: upgrade the kernel, or `sudo setcap cap_net_raw+ep "$(command -v node)"`'
              : 'see the error; `holdfast start --policy-routing` holds flows without device binding',
          },
    );
  }

  // 2. interfaces and default routes
  for (const i of nonLoop) {
    push({ id: `interface:${i.name}`, status: 'info', summary: describeIf(i, snap), data: i });
  }
  if (withDefault.length === 0) {
    push({ id: 'routes', status: 'warn', summary: 'no interface has a default route: there is nowhere to send flows', fix: 'connect to a network' });
  } else {
    const b4 = bestDefault(snap, 4)?.ifname;
    const b6 = bestDefault(snap, 6)?.ifname;
    push({
      id: 'routes',
      status: 'ok',
      summary: `default routes via ${withDefault.map((i) => i.name).join(', ')}; new flows go to ${b4 ?? '-'} (IPv4), ${b6 ?? '-'} (IPv6)`,
    });
  }

  // 3. policy routing (read before rp_filter: it makes strict rp_filter harmless)
  const rules = await readRules();
  const covered = new Set<string>(); // interface names whose every address has a working rule
  const coverage: Record<string, string[]> = {};
  if (rules) {
    for (const i of withDefault) {
      const addrs = i.addresses.filter((a) => !(a.family === 6 && /^fe[89ab]/i.test(a.ip)) && i.defaultRoutes.some((r) => r.family === a.family));
      let all = addrs.length > 0;
      for (const a of addrs) {
        const r = rules.find((x) => x.family === a.family && x.src === a.ip && x.table !== 'main' && x.table !== 'local' && x.table !== 'default');
        if (r && (await tableDefaultVia(a.family, r.table, i.name))) (coverage[i.name] ??= []).push(`from ${a.ip} lookup ${r.table}`);
        else all = false;
      }
      if (all) covered.add(i.name);
    }
  }
  const policyCoversAll = withDefault.length > 0 && withDefault.every((i) => covered.has(i.name));
  const ours = rules?.filter((r) => r.protocol === '73') ?? [];
  if (!rules) {
    push({ id: 'policy-routing', status: 'info', summary: 'cannot read routing rules (`ip rule` failed: is iproute2 installed?)' });
  } else if (policyCoversAll) {
    push({
      id: 'policy-routing',
      status: 'ok',
      summary: `source policy routing covers ${withDefault.map((i) => i.name).join(', ')}${ours.length ? ' (added by holdfast --policy-routing)' : ''}: ${Object.values(coverage).flat().join('; ')}`,
      data: coverage,
    });
  } else if (covered.size > 0 || Object.keys(coverage).length > 0) {
    push({
      id: 'policy-routing',
      status: 'warn',
      summary: `source policy routing covers only part of the interfaces: ${Object.values(coverage).flat().join('; ')}`,
      fix: 'run `holdfast start --policy-routing` (it keeps one table per interface in step)',
      data: coverage,
    });
  } else {
    push({
      id: 'policy-routing',
      status: 'info',
      summary: 'no source policy routing (`from <address> lookup <table>`): not needed for proxied flows while device binding works and rp_filter is loose',
      fix: 'needed without the addon or with strict rp_filter: `holdfast start --policy-routing` (CAP_NET_ADMIN); it also holds programs that do not use the proxy (their connections keep the interface they began on)',
    });
  }

  // 4. rp_filter. The kernel uses max(conf/all, conf/<iface>); a new interface starts with
  // conf/default. Strict (1) hurts an interface that carries pinned flows once it is no longer the
  // best route: its replies fail the reverse-path check and are dropped.
  const all = readNumber(`${procSys}/net/ipv4/conf/all/rp_filter`);
  const dflt = readNumber(`${procSys}/net/ipv4/conf/default/rp_filter`);
  let strictBlocks = false;
  if (all === undefined) {
    push({ id: 'rp_filter', status: 'info', summary: `cannot read ${procSys}/net/ipv4/conf/all/rp_filter (no IPv4?)` });
  } else {
    const mode = (v: number) => (v === 1 ? 'strict' : v === 2 ? 'loose' : 'off');
    const per: Record<string, { iface: number | undefined; effective: number }> = {};
    for (const i of nonLoop) {
      if (!i.addresses.some((a) => a.family === 4)) continue;
      const v = readNumber(`${procSys}/net/ipv4/conf/${i.name}/rp_filter`);
      per[i.name] = { iface: v, effective: Math.max(all, v ?? 0) };
    }
    const future = Math.max(all, dflt ?? 0);
    const strict = Object.entries(per).filter(([, v]) => v.effective === 1).map(([n]) => n);
    const relevant = strict.filter((n) => withDefault4.some((i) => i.name === n));
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
      strictBlocks = true;
      push({
        id: 'rp_filter',
        status: 'fail',
        summary:
          `strict reverse-path filtering (rp_filter=1) on ${uncovered.join(', ')}: the host drops the replies of a flow pinned ` +
          `there once another interface has the better route (the flow stalls); ${detail}`,
        fix,
        data,
      });
    } else if (relevant.length > 0) {
      push({ id: 'rp_filter', status: 'ok', summary: `rp_filter strict on ${relevant.join(', ')}, but source policy routing covers it; ${detail}`, data });
    } else if (strict.length > 0 || future === 1) {
      const where = [strict.length ? `on ${strict.join(', ')} (no default route there now)` : '', future === 1 ? 'for new interfaces (max(all, default) = 1)' : '']
        .filter(Boolean)
        .join(' and ');
      push({ id: 'rp_filter', status: policyCoversAll ? 'info' : 'warn', summary: `rp_filter strict ${where}: flows pinned there would stall after a route change; ${detail}`, fix, data });
    } else {
      push({ id: 'rp_filter', status: 'ok', summary: `rp_filter loose or off; ${detail}`, data });
    }
  }

  // 5. IPv6
  const v6off = readNumber(`${procSys}/net/ipv6/conf/all/disable_ipv6`);
  if (v6off === undefined || v6off === 1) {
    push({ id: 'ipv6', status: 'info', summary: v6off === 1 ? 'IPv6 is disabled (net.ipv6.conf.all.disable_ipv6=1)' : 'IPv6 is not available' });
  } else {
    const global = nonLoop.filter((i) => i.addresses.some((a) => a.family === 6 && !/^fe[89ab]/i.test(a.ip)));
    const routed = global.filter((i) => i.defaultRoutes.some((r) => r.family === 6));
    let firewalld: string | undefined;
    try {
      const conf = readFileSync('/etc/firewalld/firewalld.conf', 'utf8');
      const m = /^\s*IPv6_rpfilter\s*=\s*(\S+)/im.exec(conf);
      if (m && existsSync('/run/firewalld') && !/^(no|loose)/i.test(m[1])) firewalld = m[1];
    } catch {
      /* no firewalld */
    }
    if (firewalld) {
      push({
        id: 'ipv6',
        status: 'warn',
        summary: `firewalld's IPv6_rpfilter=${firewalld} is a strict reverse-path filter for IPv6: pinned IPv6 flows stall after a route change`,
        fix: 'set IPv6_rpfilter=loose in /etc/firewalld/firewalld.conf (firewalld 1.3+) and reload, or run `holdfast start --policy-routing`',
      });
    } else {
      push({
        id: 'ipv6',
        status: 'info',
        summary: global.length
          ? `IPv6 on ${global.map((i) => i.name).join(', ')}; default route via ${routed.map((i) => i.name).join(', ') || 'none'}`
          : 'IPv6 enabled, but no interface has a global address',
      });
    }
  }

  // 6. the listener
  for (const ep of o.listeners) {
    const r = await getStatus(ep);
    const where = endpointText(ep);
    if (r.kind === 'holdfast') {
      const flows = (r.status.flows as unknown[]).length;
      const binder = r.status.binder;
      push({
        id: `listener:${where}`,
        status: binder === 'source' ? 'warn' : 'ok',
        summary: `holdfast answers at ${where} (${flows} live flow${flows === 1 ? '' : 's'}, binder ${String(binder)})`,
        ...(binder === 'source' ? { fix: 'that holdfast runs without the addon: rebuild it (`npm rebuild holdfast`) and restart, or restart with --policy-routing' } : {}),
      });
    } else if (r.kind === 'none') {
      push({ id: `listener:${where}`, status: 'warn', summary: `nothing listens at ${where} (${r.why})`, fix: `start it: holdfast start --listen ${where}` });
    } else {
      push({
        id: `listener:${where}`,
        status: 'warn',
        summary: `something that is not holdfast answers at ${where}: ${r.why}`,
        fix: 'stop it, or give holdfast another address (--listen / listen: in the config)',
      });
    }
  }

  // 7. environment variables
  const ep0 = o.listeners[0];
  if (ep0) {
    const e = envProxyState(env, ep0);
    if (e.pointsAtHoldfast.length === 0 && e.elsewhere.length === 0) {
      push({ id: 'env', status: 'info', summary: 'no proxy variables set in this shell', fix: 'eval "$(holdfast env)" (or `holdfast exec -- CMD` for one command)' });
    } else if (e.elsewhere.length === 0) {
      push({ id: 'env', status: 'ok', summary: `${e.pointsAtHoldfast.join(', ')} point at holdfast (${endpointText(ep0)})` });
    } else {
      push({
        id: 'env',
        status: 'warn',
        summary: `${e.elsewhere.map((n) => `${n}=${e.set[n]}`).join(', ')} point elsewhere than holdfast (${endpointText(ep0)})`,
        fix: 'eval "$(holdfast env)"',
      });
    }
  }

  // 8. the desktop's proxy setting
  if (o.systemProxy !== false && ep0) {
    const desktop = detectDesktop(env);
    if (!desktop) {
      push({ id: 'system-proxy', status: 'info', summary: 'no desktop detected (XDG_CURRENT_DESKTOP): the system proxy setting was not checked' });
    } else {
      const backend = backendFor(desktop);
      const ctx = { exec: systemExec(env), env };
      const why = backend.unavailable(ctx);
      if (why) push({ id: 'system-proxy', status: 'info', summary: `${desktop}: ${why}` });
      else {
        try {
          const cur = backend.current(ctx);
          const at = cur.filter((c) => pointsAt(c, ep0));
          const other = cur.filter((c) => c.mode !== 'none' && !pointsAt(c, ep0));
          if (at.length && !other.length) push({ id: 'system-proxy', status: 'ok', summary: `${desktop} proxy points at holdfast (${at.map((c) => `${c.scope}: ${c.mode}`).join(', ')})` });
          else if (other.length)
            push({
              id: 'system-proxy',
              status: 'warn',
              summary: `${desktop} proxy points elsewhere: ${other.map((c) => `${c.scope}: ${c.mode} ${c.pacUrl ?? c.http ?? ''}`).join(', ')}`,
              fix: 'holdfast system-proxy on',
            });
          else push({ id: 'system-proxy', status: 'info', summary: `${desktop} proxy: none`, fix: 'holdfast system-proxy on (or holdfast start --system-proxy)' });
        } catch (err) {
          push({ id: 'system-proxy', status: 'info', summary: `${desktop}: cannot read the proxy setting: ${(err as Error).message}` });
        }
      }
    }
  }

  const canHoldSessions = policyCoversAll || (bindingOk && !strictBlocks);
  // With policy routing covering everything, a missing addon or strict rp_filter does not block.
  const final = policyCoversAll
    ? checks.map((c) => (c.status === 'fail' ? { ...c, status: 'warn' as const } : c))
    : checks;
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
