// The status view: what /status returns, what `holdfast status` prints and what the dashboard
// draws. Built from one snapshot of the monitor and the flow table's live flows, plus the rates
// the stats sampler measured (src/observe/stats.ts); nothing here keeps state.
import type { DefaultRoute, FlowInfo, NetSnapshot } from '../contracts.js';
import { bestDefault } from '../net/monitor.js';

export type Binder = 'device' | 'source';

export interface StatusInterface {
  readonly name: string;
  readonly index: number;
  /** up and with carrier: can take new flows (given an address) */
  readonly up: boolean;
  readonly adminUp: boolean;
  readonly carrier: boolean;
  readonly loopback: boolean;
  /** "10.1.1.2/24" */
  readonly addresses: readonly string[];
  /** the first default route (lowest metric first is not guaranteed: see defaultRoutes) */
  readonly defaultRoute: { readonly family: 4 | 6; readonly gateway: string | null; readonly metric: number } | null;
  readonly defaultRoutes: readonly DefaultRoute[];
  /** holds the best default route now (IPv4 or IPv6): new flows go here */
  readonly best: boolean;
  /** live flows pinned here, and their bytes so far */
  readonly flows: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** every byte relayed through this interface since holdfast started (closed flows too) */
  readonly bytesUpTotal: number;
  readonly bytesDownTotal: number;
  /** bytes per second over the last sample (about one second) */
  readonly rateUp: number;
  readonly rateDown: number;
  /** wifi | cellular | vpn | ethernet | other (added by the app, from src/net/iftype.ts) */
  readonly type?: string;
  /** NetworkManager's or the config's word; null when neither says */
  readonly metered?: boolean | null;
  /** prefer | normal | backup | never, and where it came from (interface, metered, type, default) */
  readonly role?: string;
  readonly roleBy?: string;
}

export interface StatusFlow extends FlowInfo {
  readonly datagramsUp?: number;
  readonly datagramsDown?: number;
  /** bytes per second over the last sample */
  readonly rateUp: number;
  readonly rateDown: number;
}

export interface StatusJson {
  readonly binder: Binder;
  /** when this view was taken, and when holdfast started (ms since the epoch, holdfast's clock) */
  readonly now: number;
  readonly startedAt: number;
  readonly best: { readonly ipv4: string | null; readonly ipv6: string | null };
  readonly interfaces: readonly StatusInterface[];
  readonly flows: readonly StatusFlow[];
  readonly totals: { readonly opened: number; readonly cut: number; readonly live: number };
  /** live flows left out of `flows` (a view asked for at most N, the newest) */
  readonly flowsOmitted?: number;
}

/** What the sampler knows beyond the snapshot and the flows. */
export interface StatusRates {
  readonly now: number;
  readonly startedAt: number;
  readonly totals: { readonly opened: number; readonly cut: number };
  /** per flow id: bytes/s over the last sample */
  flowRate(id: number): { readonly up: number; readonly down: number } | undefined;
  /** per interface: bytes/s over the last sample, and bytes since start */
  ifaceRate(name: string): { readonly up: number; readonly down: number } | undefined;
  ifaceTotal(name: string): { readonly up: number; readonly down: number } | undefined;
}

interface FlowLike {
  readonly interface: string | null;
  readonly bytesUp: number;
  readonly bytesDown: number;
  toJSON(): FlowInfo & { datagramsUp?: number; datagramsDown?: number };
}

/** The status view; `maxFlows` keeps the newest flows only (the per-interface sums count all). */
export function statusOf(
  snap: NetSnapshot,
  live: readonly FlowLike[],
  binder: Binder,
  rates: StatusRates,
  maxFlows = Infinity,
): StatusJson {
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
    now: rates.now,
    startedAt: rates.startedAt,
    best: { ipv4: b4?.ifname ?? null, ipv6: b6?.ifname ?? null },
    interfaces: snap.interfaces.map((i): StatusInterface => {
      const first = i.defaultRoutes[0];
      const rate = rates.ifaceRate(i.name);
      const total = rates.ifaceTotal(i.name);
      return {
        name: i.name,
        index: i.index,
        up: i.up && i.carrier,
        adminUp: i.up,
        carrier: i.carrier,
        loopback: i.loopback,
        addresses: i.addresses.map((a) => `${a.ip}/${a.prefixLen}`),
        defaultRoute: first ? { family: first.family, gateway: first.gateway, metric: first.metric } : null,
        defaultRoutes: i.defaultRoutes,
        best: b4?.ifname === i.name || b6?.ifname === i.name,
        ...(perIf.get(i.name) ?? { flows: 0, bytesUp: 0, bytesDown: 0 }),
        bytesUpTotal: total?.up ?? 0,
        bytesDownTotal: total?.down ?? 0,
        rateUp: rate?.up ?? 0,
        rateDown: rate?.down ?? 0,
      };
    }),
    flows: (live.length > maxFlows ? live.slice(-maxFlows) : live).map((f): StatusFlow => {
      const j = f.toJSON();
      const r = rates.flowRate(j.id);
      return { ...j, rateUp: r?.up ?? 0, rateDown: r?.down ?? 0 };
    }),
    totals: { opened: rates.totals.opened, cut: rates.totals.cut, live: live.length },
    ...(live.length > maxFlows ? { flowsOmitted: live.length - maxFlows } : {}),
  };
}
