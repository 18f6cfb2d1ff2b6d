// Assembly: build every part once from the validated config, wire them (data flows one way:
// monitor -> policy -> dialer -> flows/relay), and start the listeners.
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { BlockList, isIP } from 'node:net';
import { createAuthenticator, loadUsers } from './auth.js';
import { ConfigError, formatHostPort, type Config, type ListenAddress } from './config.js';
import type { Clock, NetMonitor, Target } from './contracts.js';
import { createResolver, type Resolver } from './dns.js';
import { createConnector } from './egress/connector.js';
import { createDialer } from './egress/dial.js';
import { createPinnedSockets } from './egress/dial-udp.js';
import { Policy, systemClock } from './egress/policy.js';
import { FlowTable } from './flows.js';
import { newInboundCounters, type InboundContext, type InboundCounters } from './inbound/context.js';
import { createHttpInbound, type LocalHandler } from './inbound/http.js';
import { newBindCounters } from './inbound/socks5-bind.js';
import { newUdpCounters } from './inbound/socks5-udp.js';
import { listen, type Listener } from './inbound/listen.js';
import { loadAddon } from './native.js';
import { bestDefault, Monitor } from './net/monitor.js';
import { createSourceFinder } from './net/route.js';
import { channels } from './observe/channels.js';
import { createDashboard } from './observe/dashboard.js';
import { createMetrics } from './observe/metrics.js';
import { Stats } from './observe/stats.js';
import type { StatusJson } from './observe/status.js';
import { createPacHandler } from './pac.js';
import { nativeRelay, offloadAfterBytes } from './relay-native.js';

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

export { statusOf, type StatusJson } from './observe/status.js';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/** An address in one text form: IPv6 compressed and lower-case, IPv4-mapped IPv6 as IPv4. */
function canonicalIp(host: string): string {
  if (isIP(host) !== 6) return host.toLowerCase();
  let c: string;
  try {
    c = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase(); // a zone id (fe80::1%eth0)
  }
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(c);
  if (!m) return c;
  const hi = parseInt(m[1], 16);
  const lo = parseInt(m[2], 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function isLoopbackIp(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
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
  // the one source of what people and scrapers see: /status, the dashboard, /metrics
  const stats = new Stats({ flows, monitor, binder: dialer.binder, clock }).start();

  const listeners: Listener[] = [];
  const local = new Map<string, LocalHandler>();
  /** Is host:port one of holdfast's own listeners (a loop)? A wildcard listener is every local address. */
  const isSelf = (rawHost: string, port: number) => {
    const host = canonicalIp(rawHost.replace(/\.$/, ''));
    const isLocal = (ip: string) =>
      isLoopbackIp(ip) || monitor.current().interfaces.some((i) => i.addresses.some((a) => canonicalIp(a.ip) === ip));
    for (const l of listeners) {
      const b = l.bound();
      if (b.port !== port) continue;
      const bound = canonicalIp(b.host);
      if (host === 'localhost') {
        if (isLoopbackIp(bound) || isWildcard(bound)) return true;
      } else if (bound === host || (isWildcard(bound) && isLocal(host))) {
        return true;
      }
    }
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
    // bulk tunnels move to the native splice relay (Linux with the addon); reload changes the threshold
    relay: { afterBytes: offloadAfterBytes(cfg.relay.offloadAfter), engine: nativeRelay() },
    auth: createAuthenticator([]),
    allowClient: () => true,
  };
  // SOCKS5 UDP ASSOCIATE and BIND: pinned UDP sockets and listeners, resolved and placed as flows are
  const socks5: Mutable<NonNullable<InboundContext['socks5']>> = {
    policy,
    pinned: createPinnedSockets(addon),
    udpIdleTimeoutMs: cfg.udp.idleTimeout,
    bindAcceptTimeoutMs: cfg.bind.acceptTimeout,
    udpCounters: newUdpCounters(),
    bindCounters: newBindCounters(),
  };
  ctx.socks5 = socks5;
  const http = createHttpInbound(ctx, { maxHeaderBytes: cfg.limits.maxHeaderBytes, local, isSelf });
  const status = () => ({
    ...stats.status(),
    socks5: { udp: socks5.udpCounters, bind: socks5.bindCounters },
  });
  local.set('/status', (_req, res) => sendJson(res, status()));
  const metrics = createMetrics(stats, dialer.binder);
  local.set('/metrics', metrics.handle);
  const dashboard = createDashboard(stats); // GET /, /events, /assets/uplot.{js,css}
  for (const [path, handler] of dashboard.routes) local.set(path, handler);
  const pacSettings = { bypass: [...cfg.pac.bypass], direct: cfg.pac.direct };
  local.set('/proxy.pac', createPacHandler(pacSettings));

  /** Apply the settings of `next` (at start, and on reload) except listeners. Throws if invalid. */
  const apply = (next: Config) => {
    const users = loadUsers(next.auth);
    checkExposure(next, users.length > 0);
    ctx.auth = createAuthenticator(users);
    ctx.allowClient = clientFilter(next.clients);
    ctx.handshakeTimeoutMs = next.limits.handshakeTimeout;
    ctx.idleTimeoutMs = next.limits.idleTimeout;
    ctx.relay = { afterBytes: offloadAfterBytes(next.relay.offloadAfter), engine: ctx.relay?.engine };
    socks5.udpIdleTimeoutMs = next.udp.idleTimeout;
    socks5.bindAcceptTimeoutMs = next.bind.acceptTimeout;
    dialSettings.timeoutMs = next.dial.timeout;
    dialSettings.keepAliveMs = next.dial.keepAlive;
    connectorSettings.fallbackDelayMs = next.fallback.delay;
    policy.configure({ affinity: { mode: next.affinity.mode, lingerMs: next.affinity.linger } });
    flows.configure({ graceMs: next.grace, limits: next.limits });
    http.configure({ maxHeaderBytes: next.limits.maxHeaderBytes, handshakeTimeoutMs: next.limits.handshakeTimeout });
    Object.assign(pacSettings, { bypass: [...next.pac.bypass], direct: next.pac.direct });
  };

  const key = (a: ListenAddress) => formatHostPort(a.host, a.port);
  /** Open the listeners of `wanted` not open yet; if one fails, close the ones this call opened. */
  const openListeners = async (wanted: readonly ListenAddress[]) => {
    // a listener is known by its configured and its bound address ('localhost:1080' is '127.0.0.1:1080')
    const have = new Set(listeners.flatMap((l) => [key(l.address), key(l.bound())]));
    const opened: Listener[] = [];
    try {
      for (const addr of wanted) {
        if (have.has(key(addr))) continue;
        const l = await listen(addr, ctx, http);
        opened.push(l);
        listeners.push(l);
        const b = l.bound();
        log.info({ listen: formatHostPort(b.host, b.port), binder: dialer.binder }, 'listening');
      }
    } catch (err) {
      for (const l of opened) {
        listeners.splice(listeners.indexOf(l), 1);
        void l.close();
      }
      throw err;
    }
  };

  try {
    apply(cfg);
    await openListeners(cfg.listen);
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    unsubscribeLog();
    stats.close();
    if (!opts.monitor) monitor.close();
    flows.close();
    throw err;
  }

  /** Reload: validate everything first; on any error keep the old settings and say why. */
  const reload = async (next: Config) => {
    // validate, then open the new listeners; only when both worked are the settings applied and
    // the dropped listeners closed, so a rejected reload leaves everything as it was
    checkExposure(next, loadUsers(next.auth).length > 0);
    await openListeners(next.listen);
    apply(next);
    const wanted = new Set(next.listen.map(key));
    for (const l of [...listeners]) {
      if (wanted.has(key(l.address)) || wanted.has(key(l.bound()))) continue;
      listeners.splice(listeners.indexOf(l), 1);
      void l.close(); // stops accepting; its live flows go on
      log.info({ listen: key(l.address) }, 'listener closed');
    }
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
        dashboard.close();
        stats.close();
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
