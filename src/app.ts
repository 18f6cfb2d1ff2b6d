// Assembly: build every part once from the validated config, wire them (data flows one way:
// monitor -> policy -> dialer -> flows/relay), and start the listeners.
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { BlockList, isIP } from 'node:net';
import { createAuthenticator, loadUsers } from './auth.js';
import { ConfigError, formatHostPort, type Config, type ListenAddress } from './config.js';
import type { Clock, NetMonitor, NetSnapshot, Target } from './contracts.js';
import { createResolver, type Resolver } from './dns.js';
import { createConnector } from './egress/connector.js';
import { createDialer } from './egress/dial.js';
import { Policy, systemClock } from './egress/policy.js';
import { FlowTable } from './flows.js';
import { newInboundCounters, type InboundContext, type InboundCounters } from './inbound/context.js';
import { createHttpInbound, type LocalHandler } from './inbound/http.js';
import { listen, type Listener } from './inbound/listen.js';
import { loadAddon } from './native.js';
import { bestDefault, Monitor } from './net/monitor.js';
import { createSourceFinder } from './net/route.js';
import { channels } from './observe/channels.js';

export interface StartOptions {
  readonly log: Logger;
  readonly monitor?: NetMonitor;
  readonly clock?: Clock;
  readonly resolver?: Resolver;
}

export interface Holdfast {
  readonly listeners: readonly Listener[];
  readonly flows: FlowTable;
  readonly monitor: NetMonitor;
  readonly binder: 'device' | 'source';
  status(): StatusJson;
  /** Apply a new configuration without dropping live flows; throws (keeping the old) if invalid. */
  reload(cfg: Config): Promise<void>;
  readonly counters: InboundCounters;
  /** Stop listening, let flows finish for `drainMs`, then cut the rest. */
  close(drainMs?: number): Promise<void>;
}

export interface StatusJson {
  readonly binder: 'device' | 'source';
  readonly best: { readonly ipv4: string | null; readonly ipv6: string | null };
  readonly interfaces: unknown[];
  readonly flows: unknown[];
  readonly totals: { readonly opened: number; readonly cut: number; readonly live: number };
}

export function statusOf(snap: NetSnapshot, flows: FlowTable, binder: 'device' | 'source'): StatusJson {
  const live = flows.list();
  const perIf = new Map<string, { flows: number; bytesUp: number; bytesDown: number }>();
  for (const f of live) {
    if (!f.interface) continue;
    const s = perIf.get(f.interface) ?? { flows: 0, bytesUp: 0, bytesDown: 0 };
    s.flows++;
    s.bytesUp += f.bytesUp;
    s.bytesDown += f.bytesDown;
    perIf.set(f.interface, s);
  }
  const b4 = bestDefault(snap, 4);
  const b6 = bestDefault(snap, 6);
  return {
    binder,
    best: { ipv4: b4?.ifname ?? null, ipv6: b6?.ifname ?? null },
    interfaces: snap.interfaces.map((i) => {
      const best = i.defaultRoutes[0];
      return {
        name: i.name,
        index: i.index,
        up: i.up && i.carrier,
        adminUp: i.up,
        carrier: i.carrier,
        loopback: i.loopback,
        addresses: i.addresses.map((a) => `${a.ip}/${a.prefixLen}`),
        defaultRoute: best ? { family: best.family, gateway: best.gateway, metric: best.metric } : null,
        defaultRoutes: i.defaultRoutes,
        best: b4?.ifname === i.name || b6?.ifname === i.name,
        ...(perIf.get(i.name) ?? { flows: 0, bytesUp: 0, bytesDown: 0 }),
      };
    }),
    flows: live.map((f) => f.toJSON()),
    totals: { opened: flows.totals.opened, cut: flows.totals.cut, live: live.length },
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

/** Refuse to expose an open proxy: a non-loopback listener needs auth or an explicit opt-out. */
function checkExposure(cfg: Config, hasUsers: boolean): void {
  if (hasUsers || cfg.allowUnauthenticated) return;
  const exposed = cfg.listen.filter((l) => !isLoopbackHost(l.host));
  if (exposed.length) {
    throw new ConfigError(
      `listen: ${exposed.map((l) => formatHostPort(l.host, l.port)).join(', ')} is reachable from other hosts, ` +
        'and no auth.users are set: that would be an open proxy. Add auth users, or set allowUnauthenticated: true ' +
        '(and restrict `clients`) if you really mean it.',
    );
  }
}

/** The client allow-list as a function; empty list: everyone. */
function clientFilter(cidrs: readonly string[]): (ip: string) => boolean {
  if (cidrs.length === 0) return () => true;
  const list = new BlockList();
  for (const c of cidrs) {
    const [ip, len] = c.split('/');
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (len === undefined) list.addAddress(ip, type);
    else list.addSubnet(ip, Number(len), type);
  }
  return (ip) => {
    const v4mapped = ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : undefined;
    if (v4mapped) return list.check(v4mapped, 'ipv4');
    return list.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4');
  };
}

function sendJson(res: ServerResponse, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(200, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

export async function startHoldfast(cfg: Config, opts: StartOptions): Promise<Holdfast> {
  const { log } = opts;
  const clock = opts.clock ?? systemClock;
  const addonState = loadAddon();
  const addon = addonState.ok ? addonState.addon : undefined;
  if (!addonState.ok) {
    log.warn(
      { why: addonState.why },
      'native addon missing: flows are pinned by source address only, which does not hold them across ' +
        'route changes without policy routing; install a C compiler and python3, then `npm rebuild holdfast`',
    );
  }
  const monitor = opts.monitor ?? new Monitor();
  const unsubscribeLog = monitor.onChange((_prev, next, diff) => {
    log.info(
      { generation: next.generation, changed: diff.changed, routes: diff.routes, best: bestDefault(next, 4)?.ifname ?? null },
      'net change',
    );
    if (channels.netChange.hasSubscribers) channels.netChange.publish({ snapshot: next, diff });
  });
  // Settings a reload may change are kept in these objects, which the parts read when a new flow
  // or connection begins; live flows keep what they were given.
  const dialSettings = { timeoutMs: cfg.dial.timeout, keepAliveMs: cfg.dial.keepAlive };
  const dialer = createDialer(dialSettings, addon);
  const policy = new Policy(
    monitor,
    createSourceFinder(addon),
    { affinity: { mode: cfg.affinity.mode, lingerMs: cfg.affinity.linger } },
    clock,
  );
  const resolver =
    opts.resolver ??
    createResolver({
      perInterface: Object.fromEntries(Object.entries(cfg.interfaces).map(([name, i]) => [name, i.dns])),
    });
  const flows = new FlowTable({ graceMs: cfg.grace, limits: cfg.limits, log, clock });
  flows.watch(monitor);

  const listeners: Listener[] = [];
  const local = new Map<string, LocalHandler>();
  const isSelf = (host: string, port: number) => {
    if (!listeners.some((l) => l.bound().port === port)) return false;
    if (host === 'localhost') return true;
    for (const l of listeners) if (l.bound().host === host || isWildcard(l.bound().host)) return true;
    for (const i of monitor.current().interfaces) for (const a of i.addresses) if (a.ip === host) return true;
    return false;
  };
  const connectorSettings = { fallbackDelayMs: cfg.fallback.delay, refuse: (t: Target) => isSelf(t.ip, t.port) };
  const connector = createConnector(resolver, policy, dialer, connectorSettings);
  const counters = newInboundCounters();
  const ctx: Mutable<InboundContext> = {
    log,
    connector,
    flows,
    counters,
    handshakeTimeoutMs: cfg.limits.handshakeTimeout,
    idleTimeoutMs: cfg.limits.idleTimeout,
    auth: createAuthenticator([]),
    allowClient: () => true,
  };
  const http = createHttpInbound(ctx, { resolver, policy, dialer, maxHeaderBytes: cfg.limits.maxHeaderBytes, local, isSelf });
  const status = () => statusOf(monitor.current(), flows, dialer.binder);
  local.set('/status', (_req, res) => sendJson(res, status()));

  /** Apply the settings of `next` (at start, and on reload) except listeners. Throws if invalid. */
  const apply = (next: Config) => {
    const users = loadUsers(next.auth);
    checkExposure(next, users.length > 0);
    ctx.auth = createAuthenticator(users);
    ctx.allowClient = clientFilter(next.clients);
    ctx.handshakeTimeoutMs = next.limits.handshakeTimeout;
    ctx.idleTimeoutMs = next.limits.idleTimeout;
    dialSettings.timeoutMs = next.dial.timeout;
    dialSettings.keepAliveMs = next.dial.keepAlive;
    connectorSettings.fallbackDelayMs = next.fallback.delay;
    policy.configure({ affinity: { mode: next.affinity.mode, lingerMs: next.affinity.linger } });
    flows.configure({ graceMs: next.grace, limits: next.limits });
    http.configure({ maxHeaderBytes: next.limits.maxHeaderBytes, handshakeTimeoutMs: next.limits.handshakeTimeout });
  };

  const key = (a: ListenAddress) => formatHostPort(a.host, a.port);
  const openListeners = async (wanted: readonly ListenAddress[]) => {
    const have = new Set(listeners.map((l) => key(l.address)));
    for (const addr of wanted) {
      if (have.has(key(addr))) continue;
      const l = await listen(addr, ctx, http);
      listeners.push(l);
      const b = l.bound();
      log.info({ listen: formatHostPort(b.host, b.port), binder: dialer.binder }, 'listening');
    }
  };

  try {
    apply(cfg);
    await openListeners(cfg.listen);
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    unsubscribeLog();
    if (!opts.monitor) monitor.close();
    flows.close();
    throw err;
  }

  /** Reload: validate everything first; on any error keep the old settings and say why. */
  const reload = async (next: Config) => {
    apply(next);
    const wanted = new Set(next.listen.map(key));
    for (const l of [...listeners]) {
      if (wanted.has(key(l.address))) continue;
      listeners.splice(listeners.indexOf(l), 1);
      void l.close(); // stops accepting; its live flows go on
      log.info({ listen: key(l.address) }, 'listener closed');
    }
    await openListeners(next.listen);
  };

  let closing: Promise<void> | undefined;
  return {
    listeners,
    flows,
    monitor,
    binder: dialer.binder,
    status,
    reload,
    counters,
    close(drainMs = 0) {
      closing ??= (async () => {
        const stopped = Promise.all(listeners.map((l) => l.close()));
        if (drainMs > 0 && flows.size > 0) {
          const deadline = Date.now() + drainMs;
          while (flows.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        }
        for (const f of flows.list()) f.cut(new Error('holdfast is shutting down'));
        await http.close();
        unsubscribeLog();
        flows.close();
        if (!opts.monitor) monitor.close();
        // connections still in their handshake close on their own timeout; do not wait for them
        await Promise.race([stopped, new Promise((r) => setTimeout(r, 1000).unref())]);
      })();
      return closing;
    },
  };
}
