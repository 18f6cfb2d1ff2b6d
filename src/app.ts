// Assembly: build every part once from the validated config, wire them (data flows one way:
// monitor -> policy -> dialer -> flows/relay), and start the listeners.
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { formatHostPort, type Config } from './config.js';
import type { Clock, NetMonitor, NetSnapshot } from './contracts.js';
import { createResolver, type Resolver } from './dns.js';
import { createConnector } from './egress/connector.js';
import { createDialer } from './egress/dial.js';
import { Policy, systemClock } from './egress/policy.js';
import { FlowTable } from './flows.js';
import type { InboundContext } from './inbound/context.js';
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
  const dialer = createDialer({ timeoutMs: cfg.dial.timeout, keepAliveMs: cfg.dial.keepAlive }, addon);
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
  const connector = createConnector(resolver, policy, dialer, { fallbackDelayMs: cfg.fallback.delay });
  const flows = new FlowTable({ graceMs: cfg.grace, log, clock });
  flows.watch(monitor);

  const listeners: Listener[] = [];
  const local = new Map<string, LocalHandler>();
  const ctx: InboundContext = { log, connector, flows, handshakeTimeoutMs: 15_000 };
  const selfPorts = () => new Set(listeners.map((l) => l.bound().port));
  const isSelf = (host: string, port: number) => {
    if (!selfPorts().has(port)) return false;
    if (host === 'localhost') return true;
    for (const l of listeners) if (l.bound().host === host) return true;
    for (const i of monitor.current().interfaces) for (const a of i.addresses) if (a.ip === host) return true;
    return false;
  };
  const http = createHttpInbound({ ...ctx, resolver, policy, dialer, maxHeaderBytes: 16 * 1024, local, isSelf });
  const status = () => statusOf(monitor.current(), flows, dialer.binder);
  local.set('/status', (_req, res) => sendJson(res, status()));

  try {
    for (const addr of cfg.listen) listeners.push(await listen(addr, ctx, http));
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    monitor.close();
    flows.close();
    throw err;
  }
  for (const l of listeners) {
    const b = l.bound();
    log.info({ listen: formatHostPort(b.host, b.port), binder: dialer.binder }, 'listening');
  }

  let closing: Promise<void> | undefined;
  return {
    listeners,
    flows,
    monitor,
    binder: dialer.binder,
    status,
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
