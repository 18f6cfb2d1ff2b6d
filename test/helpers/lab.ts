// The KERNEL-NOTES two-link lab, built from network namespaces, veth pairs and nftables.
//
//   host ns                       router1 ns                      server ns
//   if1 10.1.1.2/24 ────── host 10.1.1.1/24   srv 10.9.1.1/24 ────── net1 10.9.1.2/24
//       fd01:1::2/64            fd01:1::1/64      fd09:1::1/64           fd09:1::2/64
//                                 router2 ns                          lo 10.200.0.1/32 10.200.0.2/32
//   if2 10.1.2.2/24 ────── host 10.1.2.1/24   srv 10.9.2.1/24 ────── net2   fd20::1/128 fd20::2/128
//       fd01:2::2/64            fd01:2::1/64      fd09:2::1/64           10.9.2.2/24 fd09:2::2/64
//
// Each router forwards, masquerades toward the server and drops forwarded packets whose source is
// not in its own host-side subnet (BCP 38), so the server tells the networks apart by the peer
// address it sees (10.9.1.1 = net1, 10.9.2.1 = net2). The host starts with only if1 and its
// default route; addBetterRouteViaIf2() brings if2 up with a lower-metric default route.
// (This kernel has no dummy driver: the service addresses live on the server's loopback.)
//
// Names carry a `hf<pid><seq>` prefix; setup deletes leftovers of dead pids, destroy() (also on
// SIGINT/SIGTERM/exit) kills every process the lab started and deletes every namespace.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Child, run, type RunOptions, type RunResult } from './proc.js';

export type LabNs = 'host' | 'r1' | 'r2' | 'server';

export const ADDR = {
  host: { if1: { v4: '10.1.1.2', v6: 'fd01:1::2' }, if2: { v4: '10.1.2.2', v6: 'fd01:2::2' } },
  r1: { host: { v4: '10.1.1.1', v6: 'fd01:1::1' }, srv: { v4: '10.9.1.1', v6: 'fd09:1::1' } },
  r2: { host: { v4: '10.1.2.1', v6: 'fd01:2::1' }, srv: { v4: '10.9.2.1', v6: 'fd09:2::1' } },
  server: {
    net1: { v4: '10.9.1.2', v6: 'fd09:1::2' },
    net2: { v4: '10.9.2.2', v6: 'fd09:2::2' },
    /** the service addresses, reachable from the host only through a router */
    service: { v4: ['10.200.0.1', '10.200.0.2'], v6: ['fd20::1', 'fd20::2'] },
  },
} as const;

/** The peer address the server sees for a flow that came through each network (after NAT). */
export const NETWORK_OF_PEER: Readonly<Record<string, 'net1' | 'net2'>> = {
  [ADDR.r1.srv.v4]: 'net1',
  [ADDR.r1.srv.v6]: 'net1',
  [ADDR.r2.srv.v4]: 'net2',
  [ADDR.r2.srv.v6]: 'net2',
};

export const IF1_METRIC = 100;
export const IF2_METRIC = 50;

export interface LabOptions {
  /** configure IPv6 too (default true) */
  ipv6?: boolean;
  /** if2 up with its addresses from the start, without a default route (default: if2 exists but is down) */
  if2AtStart?: boolean;
}

const PREFIX_RE = /^hf(\d+)[a-z]/;
const live = new Set<Lab>();
let seq = 0;
let handlersInstalled = false;

let skipReasonCache: { reason: string | undefined } | undefined;
let skipReasonPrinted = false;

/** Why the lab cannot run here, or undefined when it can. Synchronous, so usable in `{ skip }`. */
export function labSkipReason(): string | undefined {
  if (skipReasonCache) return skipReasonCache.reason;
  let reason: string | undefined;
  if (process.platform !== 'linux') reason = `the netns lab needs Linux (platform is ${process.platform})`;
  else if (process.getuid?.() !== 0) reason = 'the netns lab needs root (ip netns, nft)';
  else {
    const probe = `hf${process.pid}z`;
    try {
      execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe', timeout: 5000 });
      execFileSync('ip', ['-n', probe, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1'], { stdio: 'pipe', timeout: 5000 });
      execFileSync('ip', ['netns', 'exec', probe, 'nft', 'list', 'ruleset'], { stdio: 'pipe', timeout: 5000 });
      execFileSync('curl', ['--version'], { stdio: 'pipe', timeout: 5000 });
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      reason = `ip netns / veth / nft / curl unusable: ${e.stderr?.toString().trim() || e.message}`;
    } finally {
      try {
        execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe', timeout: 5000 });
      } catch {
        /* was never made */
      }
    }
  }
  skipReasonCache = { reason };
  return reason;
}

/**
 * Test options for a lab test: `{ skip: reason }` when the lab cannot run here (the reason is
 * printed). In CI (CI=true) it never skips: the test runs and fails in Lab.create, saying why.
 */
export function labTestOptions(extra: { timeout?: number } = {}): { skip?: string; timeout?: number } {
  const reason = labSkipReason();
  if (reason === undefined) return { ...extra };
  if (!skipReasonPrinted) console.log(`# netns lab ${process.env.CI === 'true' ? 'unusable (CI: tests will fail)' : 'skipped'}: ${reason}`);
  skipReasonPrinted = true;
  if (process.env.CI === 'true') return { ...extra };
  return { ...extra, skip: reason };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function netnsNames(): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

function killNetnsPidsSync(name: string): void {
  let pids: number[] = [];
  try {
    pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 5000 })
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function deleteNetnsSync(name: string): void {
  killNetnsPidsSync(name);
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe', timeout: 5000 });
  } catch {
    /* already gone */
  }
  rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
}

/** Delete namespaces (and /etc/netns dirs) left by earlier runs whose process is dead. */
export function deleteLeftovers(): string[] {
  const deleted: string[] = [];
  const dead = (name: string): boolean => {
    const m = PREFIX_RE.exec(name);
    return !!m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  };
  for (const name of netnsNames()) {
    if (dead(name)) {
      deleteNetnsSync(name);
      deleted.push(name);
    }
  }
  try {
    for (const name of readdirSync('/etc/netns')) if (dead(name)) rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
  } catch {
    /* no /etc/netns */
  }
  return deleted;
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const lab of live) lab.destroySync();
  });
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(sig, () => {
      for (const lab of live) lab.destroySync();
      process.exit(code);
    });
  }
}

/** The environment for commands run in the lab: no proxy variables from the caller. */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/_proxy$/i.test(k)) env[k] = v;
  return env;
}

export class Lab {
  readonly prefix: string;
  readonly ns: Readonly<Record<LabNs, string>>;
  readonly ipv6: boolean;
  readonly children = new Set<Child>();
  private if2Configured: boolean;
  private if2HasDefault = false;
  private destroying: Promise<void> | undefined;
  private etcDir: string;

  private constructor(opts: LabOptions) {
    this.prefix = `hf${process.pid}${String.fromCharCode(97 + (seq++ % 25))}`;
    this.ns = { host: `${this.prefix}h`, r1: `${this.prefix}r1`, r2: `${this.prefix}r2`, server: `${this.prefix}s` };
    this.ipv6 = opts.ipv6 ?? true;
    this.if2Configured = false;
    this.etcDir = `/etc/netns/${this.ns.host}`;
  }

  static async create(opts: LabOptions = {}): Promise<Lab> {
    const reason = labSkipReason();
    if (reason) throw new Error(`netns lab unusable: ${reason}`);
    installHandlers();
    deleteLeftovers();
    const lab = new Lab(opts);
    live.add(lab);
    try {
      await lab.build(opts);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  /** `ip -n <ns> -batch -` with the given lines. */
  async ipBatch(ns: LabNs, lines: string[]): Promise<void> {
    await run('ip', ['-n', this.ns[ns], '-batch', '-'], { input: lines.join('\n') + '\n' });
  }

  private async sysctl(ns: LabNs, settings: Record<string, string | number>): Promise<void> {
    const args = ['netns', 'exec', this.ns[ns], 'sysctl', '-q'];
    for (const [k, v] of Object.entries(settings)) args.push('-w', `${k}=${v}`);
    await run('ip', args);
  }

  private async build(opts: LabOptions): Promise<void> {
    const v6 = this.ipv6;
    for (const n of Object.values(this.ns)) await run('ip', ['netns', 'add', n]);
    mkdirSync(this.etcDir, { recursive: true });
    writeFileSync(`${this.etcDir}/resolv.conf`, 'nameserver 127.0.0.1\n');

    // Namespace-wide defaults before any interface exists (new interfaces copy `default`).
    const v6defaults: Record<string, number> = v6
      ? {
          'net.ipv6.conf.all.accept_dad': 0,
          'net.ipv6.conf.default.accept_dad': 0,
          'net.ipv6.conf.all.accept_ra': 0,
          'net.ipv6.conf.default.accept_ra': 0,
          'net.ipv6.conf.all.keep_addr_on_down': 1,
          'net.ipv6.conf.default.keep_addr_on_down': 1,
        }
      : { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 };
    await Promise.all([
      this.sysctl('host', {
        'net.ipv4.conf.all.rp_filter': 2,
        'net.ipv4.conf.default.rp_filter': 2,
        'net.ipv4.conf.all.arp_announce': 2,
        'net.ipv4.conf.default.arp_announce': 2,
        'net.ipv4.ip_forward': 0,
        ...v6defaults,
      }),
      ...(['r1', 'r2'] as const).map((r) =>
        this.sysctl(r, {
          'net.ipv4.ip_forward': 1,
          'net.ipv4.conf.all.rp_filter': 0,
          'net.ipv4.conf.default.rp_filter': 0,
          ...v6defaults,
          ...(v6 ? { 'net.ipv6.conf.all.forwarding': 1 } : {}),
        }),
      ),
      this.sysctl('server', { 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0, ...v6defaults }),
    ]);

    // Links: created inside the namespaces, so no name ever exists in the caller's namespace.
    await this.ipBatch('host', [
      'link set lo up',
      `link add if1 type veth peer name host netns ${this.ns.r1}`,
      `link add if2 type veth peer name host netns ${this.ns.r2}`,
    ]);
    await this.ipBatch('server', [
      'link set lo up',
      `link add net1 type veth peer name srv netns ${this.ns.r1}`,
      `link add net2 type veth peer name srv netns ${this.ns.r2}`,
    ]);
    // Per-interface settings, explicitly (rp_filter uses max(all, iface)).
    await this.sysctl('host', {
      'net.ipv4.conf.if1.rp_filter': 2,
      'net.ipv4.conf.if2.rp_filter': 2,
      'net.ipv4.conf.if1.arp_announce': 2,
      'net.ipv4.conf.if2.arp_announce': 2,
      ...(v6 ? { 'net.ipv6.conf.if1.accept_dad': 0, 'net.ipv6.conf.if2.accept_dad': 0 } : {}),
    });

    // Routers: addresses, routes to the service prefix via the server, nftables.
    for (const r of ['r1', 'r2'] as const) {
      const a = ADDR[r];
      const n = r === 'r1' ? 1 : 2;
      const srvSide = ADDR.server[r === 'r1' ? 'net1' : 'net2'];
      await this.ipBatch(r, [
        'link set lo up',
        `addr add ${a.host.v4}/24 dev host`,
        `addr add ${a.srv.v4}/24 dev srv`,
        ...(v6 ? [`addr add ${a.host.v6}/64 dev host nodad`, `addr add ${a.srv.v6}/64 dev srv nodad`] : []),
        'link set host up',
        'link set srv up',
        `route add 10.200.0.0/24 via ${srvSide.v4} dev srv`,
        ...(v6 ? [`route add fd20::/64 via ${srvSide.v6} dev srv`] : []),
      ]);
      const ruleset = [
        'table inet hf {',
        '  chain forward {',
        '    type filter hook forward priority filter; policy accept;',
        `    iifname "host" ip saddr != 10.1.${n}.0/24 counter drop comment "bcp38-v4"`,
        `    iifname "host" ip6 saddr != fd01:${n}::/64 counter drop comment "bcp38-v6"`,
        `    iifname "host" oifname "srv" counter comment "forwarded"`,
        '  }',
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    oifname "srv" masquerade',
        '  }',
        '}',
      ].join('\n');
      await run('ip', ['netns', 'exec', this.ns[r], 'nft', '-f', '-'], { input: ruleset + '\n' });
    }

    // Server: one leg per router, the service addresses on loopback; replies go to the NATed
    // router address, which is directly connected on the leg the request came in on.
    const s = ADDR.server;
    await this.ipBatch('server', [
      ...s.service.v4.map((ip) => `addr add ${ip}/32 dev lo`),
      ...(v6 ? s.service.v6.map((ip) => `addr add ${ip}/128 dev lo nodad`) : []),
      `addr add ${s.net1.v4}/24 dev net1`,
      `addr add ${s.net2.v4}/24 dev net2`,
      ...(v6 ? [`addr add ${s.net1.v6}/64 dev net1 nodad`, `addr add ${s.net2.v6}/64 dev net2 nodad`] : []),
      'link set net1 up',
      'link set net2 up',
    ]);

    // Host: if1 with its default route; if2 down (or up without a default route).
    await this.ipBatch('host', [
      `addr add ${ADDR.host.if1.v4}/24 dev if1`,
      ...(v6 ? [`addr add ${ADDR.host.if1.v6}/64 dev if1 nodad`] : []),
      'link set if1 up',
      `route add default via ${ADDR.r1.host.v4} dev if1 metric ${IF1_METRIC}`,
      ...(v6 ? [`route add ::/0 via ${ADDR.r1.host.v6} dev if1 metric ${IF1_METRIC}`] : []),
    ]);
    if (opts.if2AtStart) await this.configureIf2();
  }

  private async configureIf2(): Promise<void> {
    if (this.if2Configured) return;
    await this.ipBatch('host', [
      `addr add ${ADDR.host.if2.v4}/24 dev if2`,
      ...(this.ipv6 ? [`addr add ${ADDR.host.if2.v6}/64 dev if2 nodad`] : []),
      'link set if2 up',
    ]);
    this.if2Configured = true;
  }

  /**
   * Bring if2 up (addresses, if not yet) and give it a default route with a lower metric than
   * if1's, IPv4 and IPv6, in one `ip -batch`. Resolves with the time (Date.now) it was done.
   */
  async addBetterRouteViaIf2(): Promise<number> {
    const lines: string[] = [];
    if (!this.if2Configured) {
      lines.push(`addr add ${ADDR.host.if2.v4}/24 dev if2`);
      if (this.ipv6) lines.push(`addr add ${ADDR.host.if2.v6}/64 dev if2 nodad`);
      lines.push('link set if2 up');
    }
    lines.push(`route add default via ${ADDR.r2.host.v4} dev if2 metric ${IF2_METRIC}`);
    if (this.ipv6) lines.push(`route add ::/0 via ${ADDR.r2.host.v6} dev if2 metric ${IF2_METRIC}`);
    await this.ipBatch('host', lines);
    this.if2Configured = true;
    this.if2HasDefault = true;
    return Date.now();
  }

  /**
   * Administratively down an interface of the host namespace. The kernel removes the routes
   * through it (addresses stay: keep_addr_on_down=1); ifUp() puts its default routes back.
   */
  async ifDown(ifname: 'if1' | 'if2'): Promise<void> {
    await this.ipBatch('host', [`link set ${ifname} down`]);
  }

  async ifUp(ifname: 'if1' | 'if2'): Promise<void> {
    const lines = [`link set ${ifname} up`];
    const [gw, metric] = ifname === 'if1' ? [ADDR.r1.host, IF1_METRIC] : [ADDR.r2.host, IF2_METRIC];
    if (ifname === 'if1' || this.if2HasDefault) {
      lines.push(`route replace default via ${gw.v4} dev ${ifname} metric ${metric}`);
      if (this.ipv6) lines.push(`route replace ::/0 via ${gw.v6} dev ${ifname} metric ${metric}`);
    }
    await this.ipBatch('host', lines);
  }

  /** Take the carrier away from a host interface (its router-side peer goes down; addresses and routes stay). */
  async carrierDown(ifname: 'if1' | 'if2'): Promise<void> {
    await this.ipBatch(ifname === 'if1' ? 'r1' : 'r2', ['link set host down']);
  }

  async carrierUp(ifname: 'if1' | 'if2'): Promise<void> {
    await this.ipBatch(ifname === 'if1' ? 'r1' : 'r2', ['link set host up']);
  }

  /** Run a command inside a lab namespace, bounded (default 10 s). */
  exec(ns: LabNs, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.ns[ns], cmd, ...args], opts);
  }

  /** Start a long-lived process inside a lab namespace; it is killed on destroy(). */
  spawn(ns: LabNs, argv: readonly string[], opts: { lines?: boolean } = {}): Child {
    if (this.destroying) throw new Error('lab is being destroyed');
    const child = new Child(['ip', 'netns', 'exec', this.ns[ns], ...argv], { env: cleanEnv() }, opts);
    this.children.add(child);
    void child.exited.then(() => this.children.delete(child));
    return child;
  }

  /** The routers' nftables counters (BCP 38 drops, forwarded packets), for diagnostics. */
  async counters(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const r of ['r1', 'r2'] as const) {
      const res = await this.exec(r, 'nft', ['-j', 'list', 'table', 'inet', 'hf'], { allowFail: true });
      if (res.code !== 0) continue;
      const items = (JSON.parse(res.stdout) as { nftables: Array<{ rule?: { comment?: string; expr: Array<Record<string, unknown>> } }> }).nftables;
      for (const it of items) {
        if (!it.rule?.comment) continue;
        const c = it.rule.expr.find((e) => 'counter' in e)?.counter as { packets: number } | undefined;
        if (c) out[`${r}.${it.rule.comment}`] = c.packets;
      }
    }
    return out;
  }

  /** `ip route` of the host namespace, for diagnostics. */
  async hostRoutes(): Promise<string> {
    const v4 = await this.exec('host', 'ip', ['route'], { allowFail: true });
    const v6 = this.ipv6 ? await this.exec('host', 'ip', ['-6', 'route'], { allowFail: true }) : undefined;
    return (v4.stdout + (v6?.stdout ?? '')).trim();
  }

  /** Kill everything the lab started, delete its namespaces and /etc/netns entry. Idempotent. */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      await Promise.all([...this.children].map((c) => c.kill(1000)));
      for (const n of Object.values(this.ns)) {
        // anything still inside (children of children) was started by this lab
        const pids = await run('ip', ['netns', 'pids', n], { allowFail: true });
        for (const pid of pids.stdout.split(/\s+/).filter(Boolean).map(Number)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        await run('ip', ['netns', 'del', n], { allowFail: true });
      }
      rmSync(this.etcDir, { recursive: true, force: true });
      live.delete(this);
    })();
    return this.destroying;
  }

  /** Synchronous teardown for signal handlers and process exit. */
  destroySync(): void {
    for (const c of this.children) c.killSync();
    for (const n of Object.values(this.ns)) if (netnsNames().includes(n)) deleteNetnsSync(n);
    rmSync(this.etcDir, { recursive: true, force: true });
    live.delete(this);
  }
}
