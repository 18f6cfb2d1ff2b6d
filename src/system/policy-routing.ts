// `holdfast start --policy-routing`: source policy routing, kept in step with the monitor. For
// each interface with a default route, table (tableBase + ifindex) holds that default route and
// the interface's on-link prefixes, and `from <address> lookup <table>` sends every packet with
// that source out through that interface, whatever the main table says later. KERNEL-NOTES: this
// holds a pinned flow under strict rp_filter too, and rescues a socket bound by source only (no
// addon). What holdfast adds carries its own protocol number, so leftovers of a killed run are
// found and removed at the next start; everything it added is removed at exit.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { DefaultRoute, Family, NetInterface, NetMonitor, NetSnapshot } from '../contracts.js';
import { networkOf } from '../pac.js';
import { isLinkLocal } from '../net/addr.js';

/** The routing protocol number marking holdfast's rules and routes (unassigned in rt_protos). */
export const RT_PROTO = 73;
const CAP_NET_ADMIN = 12;

export class PolicyRoutingError extends Error {
  override name = 'PolicyRoutingError';
}

export interface PolicyRoutingOptions {
  readonly tableBase: number;
  readonly priority: number;
  readonly log: Logger;
  /** the privilege check (tests with a fake `ip` replace it) */
  readonly hasNetAdmin?: () => boolean;
}

export interface RuleSpec {
  readonly family: Family;
  readonly src: string;
  readonly table: number;
  readonly priority: number;
}

export interface RouteSpec {
  readonly family: Family;
  readonly table: number;
  /** "default" or a prefix */
  readonly dst: string;
  readonly dev: string;
  readonly via: string | null;
  /** on-link routes carry the preferred source */
  readonly src: string | null;
}

export interface Desired {
  readonly rules: readonly RuleSpec[];
  readonly routes: readonly RouteSpec[];
}


/** Default routes of the main table by device (see mainDefaults). */
export type MainDefaults = ReadonlyMap<string, readonly DefaultRoute[]>;

/**
 * The rules and routes a snapshot calls for (pure). `main`, when given, replaces the snapshot's
 * default routes: the monitor reads IPv6 routes from /proc/net/ipv6_route, which lists every
 * table, so the routes holdfast adds to its own tables would otherwise read as main-table ones.
 */
export function desiredFor(snap: NetSnapshot, o: { tableBase: number; priority: number }, main?: MainDefaults): Desired {
  const rules: RuleSpec[] = [];
  const routes: RouteSpec[] = [];
  const byIf = (i: NetInterface, family: Family) => {
    const all = main ? (main.get(i.name) ?? []) : i.defaultRoutes;
    const defs = all.filter((r) => r.family === family).sort((a, b) => a.metric - b.metric);
    if (!defs.length) return;
    const addrs = i.addresses.filter((a) => a.family === family && !(family === 6 && isLinkLocal(a.ip)));
    if (!addrs.length) return;
    const table = o.tableBase + i.index;
    routes.push({ family, table, dst: 'default', dev: i.name, via: defs[0].gateway, src: null });
    const seen = new Set<string>();
    for (const a of addrs) {
      const max = family === 4 ? 32 : 128;
      if (a.prefixLen < max) {
        const dst = `${networkOf(a.ip, family, a.prefixLen)}/${a.prefixLen}`;
        if (!seen.has(dst)) {
          seen.add(dst);
          routes.push({ family, table, dst, dev: i.name, via: null, src: a.ip });
        }
      }
      rules.push({ family, src: a.ip, table, priority: o.priority });
    }
  };
  for (const i of snap.interfaces) {
    if (i.loopback || !i.up) continue;
    byIf(i, 4);
    byIf(i, 6);
  }
  return { rules, routes };
}

export const ruleKey = (r: RuleSpec) => `${r.family} ${r.src} ${r.table} ${r.priority}`;
export const routeKey = (r: RouteSpec) => `${r.family} ${r.table} ${r.dst}`;
const sameRoute = (a: RouteSpec, b: RouteSpec) => a.dev === b.dev && a.via === b.via && a.src === b.src;

export function ruleArgs(r: RuleSpec, op: 'add' | 'del'): string[] {
  return [`-${r.family}`, 'rule', op, 'from', r.src, 'lookup', String(r.table), 'priority', String(r.priority), ...(op === 'add' ? ['protocol', String(RT_PROTO)] : [])];
}

export function routeArgs(r: RouteSpec, op: 'replace' | 'del'): string[] {
  const args = [`-${r.family}`, 'route', op, r.dst];
  if (r.via) args.push('via', r.via);
  args.push('dev', r.dev, 'table', String(r.table));
  if (op === 'replace') {
    if (r.src) args.push('scope', 'link', 'src', r.src);
    args.push('proto', String(RT_PROTO));
  }
  return args;
}

/** Does this process hold CAP_NET_ADMIN (effective)? */
export function hasNetAdmin(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return !!m && (BigInt(`0x${m[1]}`) & (1n << BigInt(CAP_NET_ADMIN))) !== 0n;
  } catch {
    return false;
  }
}

export type IpRun = (args: readonly string[]) => Promise<{ ok: boolean; stdout: string; stderr: string }>;

export const ipRun: IpRun = (args) =>
  new Promise((resolve) => {
    execFile('ip', args as string[], { timeout: 5000 }, (err, stdout, stderr) => {
      resolve({ ok: !err, stdout: String(stdout), stderr: String(stderr || (err as Error | null)?.message || '').trim() });
    });
  });

/** The rules (both families) marked with RT_PROTO, as `ip -N -j rule show` lists them. */
export async function markedRules(run: IpRun = ipRun): Promise<RuleSpec[]> {
  const out: RuleSpec[] = [];
  for (const family of [4, 6] as const) {
    const r = await run([`-${family}`, '-N', '-j', 'rule', 'show']);
    if (!r.ok || !r.stdout.trim()) continue;
    for (const e of JSON.parse(r.stdout) as Array<{ priority?: number; src?: string; table?: string; protocol?: string }>) {
      if (String(e.protocol) !== String(RT_PROTO) || !e.src || e.priority === undefined) continue;
      out.push({ family, src: e.src, table: Number(e.table), priority: e.priority });
    }
  }
  return out;
}

interface IpRouteEntry {
  dst?: string;
  gateway?: string;
  dev?: string;
  metric?: number;
  nexthops?: Array<{ gateway?: string; dev?: string }>;
}

/** The main table's default routes by device, both families (`ip -j route show table main default`). */
export async function mainDefaults(run: IpRun = ipRun): Promise<Map<string, DefaultRoute[]>> {
  const out = new Map<string, DefaultRoute[]>();
  for (const family of [4, 6] as const) {
    const r = await run([`-${family}`, '-j', 'route', 'show', 'table', 'main', 'default']);
    if (!r.ok) throw new PolicyRoutingError(`ip -${family} route show table main default: ${r.stderr}`);
    if (!r.stdout.trim()) continue;
    for (const e of JSON.parse(r.stdout) as IpRouteEntry[]) {
      const hops = e.nexthops?.length ? e.nexthops : [{ gateway: e.gateway, dev: e.dev }];
      for (const h of hops) {
        if (!h.dev) continue;
        const list = out.get(h.dev) ?? [];
        list.push({ family, gateway: h.gateway ?? null, metric: e.metric ?? 0 });
        out.set(h.dev, list);
      }
    }
  }
  return out;
}

/** Keeps the policy rules and tables in step with the monitor; close() removes them. */
export class PolicyRouting {
  readonly #monitor: NetMonitor;
  readonly #o: PolicyRoutingOptions;
  readonly #run: IpRun;
  readonly #rules = new Map<string, RuleSpec>();
  readonly #routes = new Map<string, RouteSpec>();
  /** tables found holding routes that are not ours: never touched */
  readonly #foreign = new Set<number>();
  readonly #checked = new Set<number>();
  #unsubscribe: (() => void) | undefined;
  #chain: Promise<void> = Promise.resolve();
  #pending = false;
  #closed = false;

  constructor(monitor: NetMonitor, o: PolicyRoutingOptions, run: IpRun = ipRun) {
    this.#monitor = monitor;
    this.#o = o;
    this.#run = run;
  }

  /** Check privileges, remove leftovers of an earlier run, install for the current snapshot, follow changes. */
  async start(): Promise<void> {
    if (process.platform !== 'linux') throw new PolicyRoutingError('--policy-routing is for Linux only');
    if (!(this.#o.hasNetAdmin ?? hasNetAdmin)()) {
      throw new PolicyRoutingError(
        '--policy-routing needs CAP_NET_ADMIN to add routing rules: run holdfast as root, or grant it with ' +
          '`sudo setcap cap_net_admin+ep "$(command -v node)"` (or a systemd unit with AmbientCapabilities=CAP_NET_ADMIN)',
      );
    }
    const probe = await this.#run(['-V']);
    if (!probe.ok) throw new PolicyRoutingError(`--policy-routing needs iproute2's ip command: ${probe.stderr}`);
    const left = await markedRules(this.#run);
    for (const r of left) {
      await this.#run(ruleArgs(r, 'del'));
      await this.#run([`-${r.family}`, 'route', 'flush', 'table', String(r.table), 'proto', String(RT_PROTO)]);
    }
    if (left.length) this.#o.log.warn({ rules: left.length }, 'policy routing: removed leftovers of an earlier run');
    // the first sync must work, or --policy-routing would run without its rules
    let errors: string[];
    try {
      errors = await this.#sync(desiredFor(this.#monitor.current(), this.#o, await mainDefaults(this.#run)));
    } catch (err) {
      errors = [(err as Error).message];
    }
    if (errors.length) {
      await this.close();
      throw new PolicyRoutingError(`--policy-routing: could not set up the routing rules: ${errors.join('; ')}`);
    }
    this.#unsubscribe = this.#monitor.onChange(() => this.#schedule());
    // a change between the first read and the subscription is not lost
    await this.#schedule();
  }

  /** Resolves when the syncs scheduled so far are done. */
  idle(): Promise<void> {
    return this.#chain;
  }

  /** Rules and routes installed now (for status and tests). */
  installed(): Desired {
    return { rules: [...this.#rules.values()], routes: [...this.#routes.values()] };
  }

  #schedule(): Promise<void> {
    if (this.#pending) return this.#chain;
    this.#pending = true;
    this.#chain = this.#chain.then(async () => {
      this.#pending = false;
      if (this.#closed) return;
      try {
        await this.#sync(desiredFor(this.#monitor.current(), this.#o, await mainDefaults(this.#run)));
      } catch (err) {
        this.#o.log.error({ err }, 'policy routing sync failed');
      }
    });
    return this.#chain;
  }

  async #tableIsOurs(family: Family, table: number): Promise<boolean> {
    const key = family * 1e10 + table;
    if (this.#foreign.has(key)) return false;
    if (this.#checked.has(key)) return true;
    const r = await this.#run([`-${family}`, '-N', '-j', 'route', 'show', 'table', String(table)]);
    const entries = r.ok && r.stdout.trim() ? (JSON.parse(r.stdout) as Array<{ protocol?: string }>) : [];
    if (entries.some((e) => String(e.protocol) !== String(RT_PROTO))) {
      this.#foreign.add(key);
      this.#o.log.error(
        { table, family },
        'policy routing: the table holds routes holdfast did not add; leaving it alone (set policyRouting.tableBase to a free range)',
      );
      return false;
    }
    this.#checked.add(key);
    return true;
  }

  /** Bring the kernel's rules and routes to `want`; returns the commands that failed. */
  async #sync(want: Desired): Promise<string[]> {
    const errors: string[] = [];
    const exec = async (args: string[]) => {
      const r = await this.#run(args);
      if (!r.ok) errors.push(`ip ${args.join(' ')}: ${r.stderr}`);
      return r.ok;
    };
    const wantRoutes = new Map<string, RouteSpec>();
    for (const r of want.routes) if (await this.#tableIsOurs(r.family, r.table)) wantRoutes.set(routeKey(r), r);
    const wantRules = new Map(want.rules.filter((r) => [...wantRoutes.values()].some((x) => x.table === r.table && x.family === r.family)).map((r) => [ruleKey(r), r]));
    let added = 0;
    let removed = 0;
    // rules that go: first, so no packet is sent to a table about to be emptied
    for (const [k, r] of this.#rules) {
      if (wantRules.has(k)) continue;
      await exec(ruleArgs(r, 'del'));
      this.#rules.delete(k);
      removed++;
    }
    for (const [k, r] of this.#routes) {
      if (wantRoutes.has(k)) continue;
      await exec(routeArgs(r, 'del'));
      this.#routes.delete(k);
      removed++;
    }
    for (const [k, r] of wantRoutes) {
      const have = this.#routes.get(k);
      if (have && sameRoute(have, r)) continue;
      if (await exec(routeArgs(r, 'replace'))) {
        this.#routes.set(k, r);
        added++;
      }
    }
    for (const [k, r] of wantRules) {
      if (this.#rules.has(k)) continue;
      if (await exec(ruleArgs(r, 'add'))) {
        this.#rules.set(k, r);
        added++;
      }
    }
    if (added || removed) {
      this.#o.log.info(
        { added, removed, rules: [...this.#rules.values()].map((r) => `from ${r.src} lookup ${r.table}`) },
        'policy routing',
      );
    }
    if (errors.length) this.#o.log.error({ errors }, 'policy routing: some commands failed');
    return errors;
  }

  /** Stop following changes and remove every rule and route added. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return this.#chain;
    this.#closed = true;
    this.#unsubscribe?.();
    await this.#chain;
    this.#chain = (async () => {
      const failed: string[] = [];
      for (const r of this.#rules.values()) {
        const res = await this.#run(ruleArgs(r, 'del'));
        if (!res.ok) failed.push(res.stderr);
      }
      for (const r of this.#routes.values()) {
        // a route whose interface went away is gone already
        await this.#run(routeArgs(r, 'del'));
      }
      const n = this.#rules.size;
      this.#rules.clear();
      this.#routes.clear();
      this.#o.log.info({ rules: n, failed: failed.length }, 'policy routing removed');
    })();
    return this.#chain;
  }
}

/** Start the helper for `holdfast start --policy-routing`. */
export async function startPolicyRouting(monitor: NetMonitor, o: PolicyRoutingOptions): Promise<PolicyRouting> {
  const pr = new PolicyRouting(monitor, o);
  await pr.start();
  return pr;
}
