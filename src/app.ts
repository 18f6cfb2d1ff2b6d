// Assembly: build every part once from the validated config, wire them (data flows one way:
// monitor -> policy -> dialer -> flows/relay), and start the listeners.
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { createAuthenticator, loadUsers } from './auth.js';
import { formatHostPort, type Config, type ListenAddress } from './config.js';
import type { Clock, NetMonitor, Target } from './contracts.js';
import { createResolver, type Resolver } from './dns.js';
import { createConnector } from './egress/connector.js';
import { createDialer } from './egress/dial.js';
import { createPinnedSockets } from './egress/dial-udp.js';
import { trackOwnEnds } from './egress/own-ends.js';
import { Policy, systemClock } from './egress/policy.js';
import { RoleBook, type RoleSettings } from './egress/roles.js';
import { compileRules } from './egress/rules.js';
import { FlowTable, type Flow } from './flows.js';
import { newInboundCounters, type InboundContext, type InboundCounters } from './inbound/context.js';
import { createHttpInbound, type LocalHandler } from './inbound/http.js';
import { newBindCounters } from './inbound/socks5-bind.js';
import { newUdpCounters } from './inbound/socks5-udp.js';
import { listen, type Listener } from './inbound/listen.js';
import { adoptListener } from './inbound/activation.js';
import { isUnspecifiedIp } from './inbound/validate.js';
import { watchFdExhaustion } from './inbound/fd-exhaustion.js';
import { loadAddon, type AddonState, type NativeAddon } from './native.js';
import { InterfaceFactsCache, type FactsOptions } from './net/iftype.js';
import { bestDefault, Monitor } from './net/monitor.js';
import { cachedSourceFinder, createSourceFinder } from './net/route.js';
import { createDashboard } from './observe/dashboard.js';
import { createMetrics } from './observe/metrics.js';
import { Stats } from './observe/stats.js';
import type { StatusJson } from './observe/status.js';
import { createPacHandler } from './pac.js';
import { nativeRelay, offloadAfterBytes } from './relay-native.js';
import { isLoopbackIp } from './net/addr.js';
import { canonicalIp, checkBoundExposure, checkExposure, clientFilter, isWildcard } from './exposure.js';

export interface StartOptions {
  readonly log: Logger;
  readonly monitor?: NetMonitor;
  readonly clock?: Clock;
  readonly resolver?: Resolver;
  /** listening sockets handed over by socket activation (fds): served instead of cfg.listen */
  readonly activated?: readonly number[];
  /** where interface types and metered states are read (tests: a fake sysfs tree, recorded nmcli) */
  readonly facts?: FactsOptions;
  /** the native addon to pin sockets with (tests: the built one, wrapped to count its calls) */
  readonly addon?: NativeAddon;
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
  /** The affinity table now: destinations held or lingering, and the live flows holding them. */
  affinity(): { entries: number; live: number };
  /** The pinned sockets the dialer keeps ready for the next dials (each an fd and a local port). */
  spareSockets(): number;
  /** Stop listening, let flows finish for `drainMs`, then cut the rest. */
  close(drainMs?: number): Promise<void>;
}

export { statusOf, type StatusJson } from './observe/status.js';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The role settings of a config: by interface name or glob, by type, for metered interfaces. */
function roleSettings(cfg: Config): RoleSettings {
  return { interfaces: cfg.interfaces, types: cfg.types, metered: cfg.metered };
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
  const addonState: AddonState = opts.addon ? { ok: true, addon: opts.addon } : loadAddon();
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
  });
  // Settings a reload may change: the dialer, the connector and the inbound context read these
  // objects when a new flow or connection begins, so live flows keep what they were given; the
  // policy, the flow table and the HTTP inbound take theirs through configure() in apply() (a new
  // grace also applies to live flows whose interface is lost after the reload).
  const dialSettings = { timeoutMs: cfg.dial.timeout, keepAliveMs: cfg.dial.keepAlive, mptcp: cfg.mptcp === 'on' };
  // every upstream socket's local end is known while it lives: a client arriving from one is a loop
  const ownEnds = trackOwnEnds();
  const counters = newInboundCounters();
  const fdExhausted = watchFdExhaustion(log, counters);
  const dialer = createDialer(dialSettings, addon, {
    onNoMptcp: (why) =>
      log.warn({ why }, 'mptcp: not available here, upstream sockets are plain TCP (`holdfast doctor` says more)'),
    onDialed: ownEnds.record,
    // pinned sockets made ahead of their dial are good while the network stays as it was
    epoch: () => monitor.epoch,
  });
  // interface types (sysfs) and metered states (NetworkManager, asked again on each change)
  const facts = new InterfaceFactsCache(opts.facts); // asked at apply() (start and reload)
  const unsubscribeFacts = monitor.onChange((_prev, _next, diff) => {
    if (diff.changed.length) void facts.refresh();
  });
  const roles = new RoleBook(roleSettings(cfg), facts);
  const policy = new Policy(
    monitor,
    // the kernel's choice per destination, asked again after any netlink event the monitor hears
    cachedSourceFinder(createSourceFinder(addon), { epoch: () => monitor.epoch }),
    { affinity: { mode: cfg.affinity.mode, lingerMs: cfg.affinity.linger }, roles, rules: compileRules(cfg.rules) },
    clock,
  );
  const dnsSettings = { timeoutMs: cfg.dns.timeout };
  const resolver =
    opts.resolver ??
    createResolver({
      perInterface: Object.fromEntries(Object.entries(cfg.interfaces).map(([name, i]) => [name, i.dns])),
      system: { settings: dnsSettings },
    });
  const flows = new FlowTable({ graceMs: cfg.grace, limits: cfg.limits, log, clock });
  flows.watch(monitor);
  // a flow that ended leaves the loop between flows, and one that waits for its server leaves it
  // idle: the dialer may prepare the next flow's socket there (ctx.waiting, below)
  const spareTime = dialer.spareTime?.bind(dialer);
  const waiting = spareTime
    ? (flow: Flow) => {
        if (flow.interface !== null && flow.localAddress !== null) spareTime(flow.interface, flow.localAddress);
      }
    : undefined;
  if (waiting) {
    flows.onChange((e) => {
      if (e.type === 'close') waiting(e.flow);
    });
  }
  // the one source of what people and scrapers see: /status, the dashboard, /metrics
  const stats = new Stats({ flows, monitor, binder: dialer.binder, clock }).start();

  const listeners: Listener[] = [];
  const local = new Map<string, LocalHandler>();
  /** Is host:port one of holdfast's own listeners (a loop)? A wildcard listener is every local address. */
  const isSelf = (rawHost: string, port: number) => {
    // most flows go to a port no listener has: nothing to parse (asked up to twice per flow)
    if (!listeners.some((l) => l.bound().port === port)) return false;
    const host = canonicalIp(rawHost.replace(/\.$/, ''));
    // 0.0.0.0 and :: are "this host": a connect to them reaches whatever listens on that port here
    // (and some listener has this port, above)
    if (isUnspecifiedIp(host)) return true;
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
    isOwnDial: ownEnds.has,
    fdExhausted,
    waiting,
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
  const forward: NonNullable<InboundContext['forward']> = {
    resumeAttempts: cfg.forward.resume.attempts,
    counters: { resumes: 0, resumeFailures: 0 },
  };
  ctx.forward = forward;
  const http = createHttpInbound(ctx, { maxHeaderBytes: cfg.limits.maxHeaderBytes, local, isSelf });
  /** The sampler's status as new flows see the host: roles counted in `best`, each interface's role. */
  const withRoles = (s: StatusJson): StatusJson => {
    const byName = new Map(monitor.current().interfaces.map((i) => [i.name, i]));
    // where new flows go now: the best default route among the interfaces of the best role
    const best = { ipv4: policy.bestForNewFlows(4) ?? null, ipv6: policy.bestForNewFlows(6) ?? null };
    return {
      ...s,
      best,
      // each interface's type, metered state and role (where it came from), as new flows see them
      interfaces: s.interfaces.map((i) => {
        const iface = byName.get(i.name);
        const isBest = best.ipv4 === i.name || best.ipv6 === i.name;
        return iface && !iface.loopback ? { ...i, best: isBest, ...policy.placementOf(iface) } : { ...i, best: isBest }; // loopback: no role
      }),
    };
  };
  const status = () => ({
    ...withRoles(stats.status()),
    socks5: { udp: socks5.udpCounters, bind: socks5.bindCounters },
    refusals: { ...counters },
    forward: { ...forward.counters },
  });
  local.set('/status', (_req, res) => sendJson(res, status()));
  const metrics = createMetrics(stats, dialer.binder, () => ({ ...counters }), (family) => policy.bestForNewFlows(family), () => forward.counters);
  local.set('/metrics', metrics.handle);
  const dashboard = createDashboard(stats, withRoles); // GET /, /events, /assets/uplot.{js,css}
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
    forward.resumeAttempts = next.forward.resume.attempts;
    dialSettings.timeoutMs = next.dial.timeout;
    dialSettings.keepAliveMs = next.dial.keepAlive;
    dialSettings.mptcp = next.mptcp === 'on';
    dnsSettings.timeoutMs = next.dns.timeout;
    connectorSettings.fallbackDelayMs = next.fallback.delay;
    // roles and rules apply to new flows; live flows keep their interface
    const rules = compileRules(next.rules);
    roles.configure(roleSettings(next));
    void facts.refresh(); // and ask NetworkManager again (a metered flag may have changed)
    policy.configure({ affinity: { mode: next.affinity.mode, lingerMs: next.affinity.linger }, rules });
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

  // Socket activation: the handed sockets are the listeners, whatever `listen:` says; adopted and
  // checked for exposure (apply) in one turn, before a first connection is accepted.
  const activated = (opts.activated?.length ?? 0) > 0;
  const effective = (c: Config): Config => (activated ? { ...c, listen: listeners.map((l) => l.bound()) } : c);
  try {
    if (activated) {
      for (const fd of opts.activated!) listeners.push(adoptListener(fd, ctx, http));
      apply(effective(cfg)); // the exposure check runs on the handed sockets' own addresses
      for (const l of listeners) log.info({ listen: key(l.bound()), binder: dialer.binder, activated: true }, 'listening');
    } else {
      apply(cfg);
      await openListeners(cfg.listen);
      checkBoundExposure(cfg, loadUsers(cfg.auth).length > 0, listeners);
    }
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    unsubscribeLog();
    unsubscribeFacts();
    stats.close();
    if (!opts.monitor) monitor.close();
    flows.close();
    dialer.close?.();
    throw err;
  }

  /** Reload: validate everything first; on any error keep the old settings and say why. */
  const reload = async (next: Config) => {
    if (activated) return apply(effective(next)); // the handed sockets stay; `listen:` does not apply
    // validate, then open the new listeners; only when both worked are the settings applied and
    // the dropped listeners closed, so a rejected reload leaves everything as it was
    const hasUsers = loadUsers(next.auth).length > 0;
    checkExposure(next, hasUsers);
    const before = new Set(listeners);
    await openListeners(next.listen);
    const wanted = new Set(next.listen.map(key));
    const kept = listeners.filter((l) => wanted.has(key(l.address)) || wanted.has(key(l.bound())));
    try {
      // every listener the new config keeps, by the address it is bound to, not its name
      checkBoundExposure(next, hasUsers, kept);
    } catch (err) {
      for (const l of listeners.filter((l) => !before.has(l))) {
        listeners.splice(listeners.indexOf(l), 1);
        void l.close();
      }
      throw err;
    }
    apply(next);
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
    affinity: () => policy.affinityTable(),
    spareSockets: () => dialer.spareSockets?.() ?? 0,
    close(drainMs = 0) {
      closing ??= (async () => {
        const stopped = Promise.all(listeners.map((l) => l.close()));
        if (drainMs > 0 && flows.size > 0) {
          const deadline = Date.now() + drainMs;
          while (flows.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        }
        for (const f of flows.list()) f.cut(new Error('holdfast is shutting down'), 'shutdown');
        dashboard.close();
        stats.close();
        await http.close();
        unsubscribeLog();
        unsubscribeFacts();
        flows.close();
        dialer.close?.();
        if (!opts.monitor) monitor.close();
        // connections still in their handshake close on their own timeout; do not wait for them
        await Promise.race([stopped, new Promise((r) => setTimeout(r, 1000).unref())]);
      })();
      return closing;
    },
  };
}
