// The one place that watches holdfast for people and scrapers: once a second it samples the flow
// table into per-interface throughput (a five-minute ring) and per-flow rates; it listens to the
// diagnostics channels for flows opening and closing and for cuts, and to the monitor for network
// changes; it keeps the counters /metrics shows and a short feed of events (route changes, cuts,
// fallbacks). /status, the dashboard, `holdfast status` and /metrics are views of it.
//
// Cost: one pass over the live flows per second, and a few map updates per flow open/close.
// Nothing per chunk: the relay's plain counters are read, never hooked.
import type { Clock, CloseReason, NetDiff, NetInterface, NetMonitor, NetSnapshot } from '../contracts.js';
import type { Flow, FlowTable } from '../flows.js';
import { bestDefault } from '../net/monitor.js';
import { channels } from './channels.js';
import { statusOf, type Binder, type StatusJson, type StatusRates } from './status.js';

export type FeedType = 'start' | 'route' | 'net' | 'cut' | 'fallback';

export interface FeedEvent {
  /** increasing per Stats instance: a client asks for events after the last seq it saw */
  readonly seq: number;
  /** ms since the epoch (holdfast's clock) */
  readonly at: number;
  readonly type: FeedType;
  readonly text: string;
  readonly interface: string | null;
}

export interface HistorySeries {
  readonly name: string;
  readonly index: number;
  /** bytes per second, oldest first; null where the interface did not exist */
  readonly down: (number | null)[];
  readonly up: (number | null)[];
}

export interface HistoryJson {
  /** sample times in seconds since the epoch, oldest first */
  readonly t: number[];
  readonly series: HistorySeries[];
}

/** The newest sample: time (s) and per interface [down, up] bytes/s. */
export interface SamplePoint {
  readonly t: number;
  readonly ifs: Record<string, { readonly index: number; readonly down: number; readonly up: number }>;
}

/** Monotonic counters for /metrics (label key -> count). */
export interface StatsCounters {
  /** flows begun, by kind (a flow that never pinned counts when it ends) */
  readonly flowsOpened: ReadonlyMap<string, number>;
  /** flows ended, by "kind|reason" */
  readonly flowsClosed: ReadonlyMap<string, number>;
  /** flows cut because their interface was lost, by "interface|why" */
  readonly cuts: ReadonlyMap<string, number>;
  readonly fallbacks: ReadonlyMap<string, number>;
  readonly affinity: ReadonlyMap<string, number>;
  /** flows whose dial failed, by HF_* code */
  readonly dialErrors: ReadonlyMap<string, number>;
  readonly routeChanges: number;
  readonly netChanges: number;
}

export interface StatsOptions {
  readonly flows: FlowTable;
  readonly monitor: NetMonitor;
  readonly binder: Binder;
  /** timestamps and flow ages (the flow table's clock); rates use a monotonic clock */
  readonly clock?: Pick<Clock, 'now'>;
  /** samples kept per interface (one per second): 300 = five minutes */
  readonly historySize?: number;
  readonly feedSize?: number;
  readonly sampleMs?: number;
}

interface FlowSeen {
  fallback: boolean;
  affinity: boolean;
}

interface Series {
  readonly name: string;
  index: number;
  readonly down: Float64Array;
  readonly up: Float64Array;
  /** samples since this series last had a value (drop it after a full ring of nothing) */
  idle: number;
}

/** Flow end reasons used as metric labels (Flow.end's vocabulary, CloseReason); anything else is folded. */
const REASONS = new Set<string>([
  'done', 'client left', 'upstream left', 'reset', 'idle', 'shutdown', 'cut', 'dial failed', 'timeout', 'upstream error', 'failed',
] satisfies CloseReason[]);

export function reasonLabel(reason: string | null): string {
  if (!reason) return 'unknown';
  if (REASONS.has(reason) || /^(E[A-Z0-9_]+|HF_[A-Z_]+)$/.test(reason)) return reason;
  return 'error';
}

function bump(m: Map<string, number>, key: string, by = 1): void {
  m.set(key, (m.get(key) ?? 0) + by);
}

function fmtSeconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** Call each listener; one that throws must not stop the sampler (or the producer) that called. */
function notify<T>(listeners: ReadonlySet<(v: T) => void>, v: T): void {
  for (const fn of listeners) {
    try {
      fn(v);
    } catch (err) {
      process.emitWarning(`holdfast stats listener failed: ${(err as Error).stack ?? String(err)}`);
    }
  }
}

/** Live Stats instances in this process: channels are process-wide, see #owns. */
let instances = 0;

export class Stats {
  readonly #flows: FlowTable;
  readonly #monitor: NetMonitor;
  readonly #binder: Binder;
  readonly #clock: Pick<Clock, 'now'>;
  readonly #cap: number;
  readonly #feedSize: number;
  readonly #sampleMs: number;
  readonly startedAt: number;

  // counters
  readonly #opened = new Map<string, number>();
  readonly #closed = new Map<string, number>();
  readonly #cuts = new Map<string, number>();
  readonly #fallbacks = new Map<string, number>();
  readonly #affinity = new Map<string, number>();
  readonly #dialErrors = new Map<string, number>();
  #routeChanges = 0;
  #netChanges = 0;

  /** bytes of flows that have ended, per interface */
  readonly #closedBytes = new Map<string, { up: number; down: number }>();
  readonly #seen = new WeakMap<Flow, FlowSeen>();
  /** interfaces that recently had a flow of ours (to attribute egress cuts when several instances run) */
  readonly #recentIfs = new Map<string, number>();

  // sampling
  readonly #times: Float64Array;
  #head = 0;
  #size = 0;
  readonly #series = new Map<string, Series>();
  #lastMono = 0;
  #lastTotals = new Map<string, { up: number; down: number }>();
  #ifRates = new Map<string, { up: number; down: number }>();
  #flowLast = new Map<number, { up: number; down: number }>();
  #flowRates = new Map<number, { up: number; down: number }>();
  #lastPoint: SamplePoint | undefined;

  // feed
  readonly #feed: FeedEvent[] = [];
  #seq = 0;

  #timer: NodeJS.Timeout | undefined;
  readonly #unwatch: () => void;
  readonly #tickListeners = new Set<(p: SamplePoint) => void>();
  readonly #eventListeners = new Set<(e: FeedEvent) => void>();
  #closedFlag = false;

  constructor(o: StatsOptions) {
    this.#flows = o.flows;
    this.#monitor = o.monitor;
    this.#binder = o.binder;
    this.#clock = o.clock ?? { now: () => Date.now() };
    this.#cap = o.historySize ?? 300;
    this.#feedSize = o.feedSize ?? 100;
    this.#sampleMs = o.sampleMs ?? 1000;
    this.#times = new Float64Array(this.#cap);
    this.startedAt = this.#clock.now();
    this.#lastMono = performance.now();
    instances++;
    channels.flowOpen.subscribe(this.#onOpen);
    channels.flowClose.subscribe(this.#onClose);
    channels.egressCut.subscribe(this.#onCut);
    // network changes straight from our monitor (exact per instance, and with the previous snapshot)
    this.#unwatch = o.monitor.onChange((prev, next, diff) => this.#onNet(prev, next, diff));
    this.#push('start', `holdfast started; ${whereNewFlowsGo(o.monitor.current())}`, null);
  }

  /** Sample every second until close(). The timer does not keep the process alive. */
  start(): this {
    if (!this.#timer && !this.#closedFlag) {
      this.#timer = setInterval(() => this.sample(), this.#sampleMs);
      this.#timer.unref();
    }
    return this;
  }

  close(): void {
    if (this.#closedFlag) return;
    this.#closedFlag = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#tickListeners.clear();
    this.#eventListeners.clear();
    channels.flowOpen.unsubscribe(this.#onOpen);
    channels.flowClose.unsubscribe(this.#onClose);
    channels.egressCut.unsubscribe(this.#onCut);
    this.#unwatch();
    instances--;
  }

  /** Called after every sample with the newest point. Returns an unsubscribe function. */
  onSample(fn: (p: SamplePoint) => void): () => void {
    this.#tickListeners.add(fn);
    return () => this.#tickListeners.delete(fn);
  }

  /** Called for every new feed event (a route change, a cut...). Returns an unsubscribe function. */
  onEvent(fn: (e: FeedEvent) => void): () => void {
    this.#eventListeners.add(fn);
    return () => this.#eventListeners.delete(fn);
  }

  // ---- views ----------------------------------------------------------------------------------

  /** The status view (the newest `maxFlows` flows; every interface sum counts them all). */
  status(maxFlows = Infinity): StatusJson {
    const live = this.#flows.list();
    const totals = this.bytesByInterface(live);
    const rates: StatusRates = {
      now: this.#clock.now(),
      startedAt: this.startedAt,
      totals: this.#flows.totals,
      flowRate: (id) => this.#flowRates.get(id),
      ifaceRate: (name) => this.#ifRates.get(name),
      ifaceTotal: (name) => totals.get(name),
    };
    return statusOf(this.#monitor.current(), live, this.#binder, rates, maxFlows);
  }

  /** The live flows of our table (for views that need only a few fields). */
  liveFlows(): readonly Flow[] {
    return this.#flows.list();
  }

  /** The monitor's current snapshot. */
  net(): NetSnapshot {
    return this.#monitor.current();
  }

  /** Per-interface throughput, oldest first. */
  history(): HistoryJson {
    const t: number[] = [];
    const start = (this.#head - this.#size + this.#cap) % this.#cap;
    for (let k = 0; k < this.#size; k++) t.push(this.#times[(start + k) % this.#cap]);
    const series: HistorySeries[] = [];
    for (const s of this.#series.values()) {
      const down: (number | null)[] = [];
      const up: (number | null)[] = [];
      for (let k = 0; k < this.#size; k++) {
        const i = (start + k) % this.#cap;
        down.push(Number.isNaN(s.down[i]) ? null : s.down[i]);
        up.push(Number.isNaN(s.up[i]) ? null : s.up[i]);
      }
      series.push({ name: s.name, index: s.index, down, up });
    }
    series.sort((a, b) => a.index - b.index);
    return { t, series };
  }

  lastSample(): SamplePoint | undefined {
    return this.#lastPoint;
  }

  /** Feed events with seq > after, oldest first. */
  events(after = 0): FeedEvent[] {
    if (after <= 0) return this.#feed.slice();
    let i = this.#feed.length;
    while (i > 0 && this.#feed[i - 1].seq > after) i--;
    return this.#feed.slice(i);
  }

  counters(): StatsCounters {
    return {
      flowsOpened: this.#opened,
      flowsClosed: this.#closed,
      cuts: this.#cuts,
      fallbacks: this.#fallbacks,
      affinity: this.#affinity,
      dialErrors: this.#dialErrors,
      routeChanges: this.#routeChanges,
      netChanges: this.#netChanges,
    };
  }

  /** Bytes relayed per interface since start (ended flows plus live ones), read now. */
  bytesByInterface(live: readonly Flow[] = this.#flows.list()): Map<string, { up: number; down: number }> {
    const out = new Map<string, { up: number; down: number }>();
    for (const [name, b] of this.#closedBytes) out.set(name, { up: b.up, down: b.down });
    for (const f of live) {
      if (!f.interface) continue;
      const b = out.get(f.interface);
      if (b) {
        b.up += f.bytesUp;
        b.down += f.bytesDown;
      } else out.set(f.interface, { up: f.bytesUp, down: f.bytesDown });
    }
    return out;
  }

  // ---- sampling -------------------------------------------------------------------------------

  /** One sample: rates since the previous one, per interface and per flow. */
  sample(): SamplePoint {
    const mono = performance.now();
    const dt = Math.max(1e-3, (mono - this.#lastMono) / 1000);
    this.#lastMono = mono;
    const now = this.#clock.now();
    const live = this.#flows.list();

    // per flow
    const flowLast = new Map<number, { up: number; down: number }>();
    const flowRates = new Map<number, { up: number; down: number }>();
    for (const f of live) {
      const prev = this.#flowLast.get(f.id);
      flowLast.set(f.id, { up: f.bytesUp, down: f.bytesDown });
      // a flow younger than this sample: its bytes so far came within it
      const up = f.bytesUp - (prev?.up ?? 0);
      const down = f.bytesDown - (prev?.down ?? 0);
      flowRates.set(f.id, { up: Math.max(0, up) / dt, down: Math.max(0, down) / dt });
      if (f.interface) this.#recentIfs.set(f.interface, now);
    }
    this.#flowLast = flowLast;
    this.#flowRates = flowRates;

    // per interface: cumulative bytes now minus at the last sample
    const totals = this.bytesByInterface(live);
    const ifRates = new Map<string, { up: number; down: number }>();
    for (const [name, b] of totals) {
      const prev = this.#lastTotals.get(name) ?? { up: 0, down: 0 };
      ifRates.set(name, { up: Math.max(0, b.up - prev.up) / dt, down: Math.max(0, b.down - prev.down) / dt });
    }
    this.#lastTotals = totals;
    this.#ifRates = ifRates;

    // the ring: one slot per sample; interfaces the host has now (not loopback unless it carried
    // bytes) get a value, the others NaN (a gap in the chart)
    const snap = this.#monitor.current();
    const present = new Map<string, NetInterface>();
    for (const i of snap.interfaces) if (!i.loopback || totals.has(i.name)) present.set(i.name, i);
    for (const name of ifRates.keys()) {
      if (!present.has(name) && !this.#series.has(name)) {
        // an interface that carries flows but is not in the snapshot (gone): keep its series
        this.#addSeries(name, Number.MAX_SAFE_INTEGER);
      }
    }
    for (const [name, i] of present) {
      const s = this.#series.get(name);
      if (!s) this.#addSeries(name, i.index);
      else s.index = i.index;
    }
    const slot = this.#head;
    this.#times[slot] = now / 1000;
    const ifs: Record<string, { index: number; down: number; up: number }> = {};
    for (const [name, s] of this.#series) {
      const r = ifRates.get(name);
      if (present.has(name) || (r && (r.up > 0 || r.down > 0))) {
        s.down[slot] = r?.down ?? 0;
        s.up[slot] = r?.up ?? 0;
        s.idle = 0;
        ifs[name] = { index: s.index, down: s.down[slot], up: s.up[slot] };
      } else {
        s.down[slot] = NaN;
        s.up[slot] = NaN;
        if (++s.idle >= this.#cap) this.#series.delete(name);
      }
    }
    this.#head = (this.#head + 1) % this.#cap;
    if (this.#size < this.#cap) this.#size++;
    for (const [name, at] of this.#recentIfs) if (now - at > 10_000) this.#recentIfs.delete(name);

    const point: SamplePoint = { t: now / 1000, ifs };
    this.#lastPoint = point;
    notify(this.#tickListeners, point);
    return point;
  }

  #addSeries(name: string, index: number): void {
    const down = new Float64Array(this.#cap).fill(NaN);
    const up = new Float64Array(this.#cap).fill(NaN);
    this.#series.set(name, { name, index, down, up, idle: 0 });
  }

  // ---- events ---------------------------------------------------------------------------------

  #push(type: FeedType, text: string, ifname: string | null): void {
    const e: FeedEvent = { seq: ++this.#seq, at: this.#clock.now(), type, text, interface: ifname };
    this.#feed.push(e);
    if (this.#feed.length > this.#feedSize) this.#feed.splice(0, this.#feed.length - this.#feedSize);
    notify(this.#eventListeners, e);
  }

  /**
   * Is this flow from our table? The channels are process-wide: with one holdfast per process
   * (production) every flow is ours; with several (some tests), check the table.
   */
  #owns(f: Flow): boolean {
    if (instances <= 1) return true;
    if (this.#seen.has(f)) return true;
    return this.#flows.list().includes(f);
  }

  readonly #onOpen = (msg: unknown): void => {
    const f = msg as Flow;
    let seen = this.#seen.get(f);
    if (!seen) {
      if (!this.#owns(f)) return;
      seen = { fallback: false, affinity: false };
      this.#seen.set(f, seen);
      bump(this.#opened, f.kind);
    }
    if (f.interface) this.#recentIfs.set(f.interface, this.#clock.now());
    // the plain-HTTP inbound may pin a flow again (a retry through the next interface)
    if (f.placedBy === 'fallback' && !seen.fallback && f.interface) {
      seen.fallback = true;
      bump(this.#fallbacks, f.interface);
      this.#push('fallback', `flow #${f.id} (${f.kind}) to ${f.destination} fell back to ${f.interface}`, f.interface);
    }
    if (f.placedBy === 'affinity' && !seen.affinity && f.interface) {
      seen.affinity = true;
      bump(this.#affinity, f.interface);
    }
  };

  readonly #onClose = (msg: unknown): void => {
    const f = msg as Flow;
    const seen = this.#seen.get(f);
    if (!seen) {
      // never pinned here: ours only if it never pinned anywhere (its dial failed); with several
      // instances in this process such a flow cannot be told apart, so it is not counted
      if (f.interface !== null || instances > 1) return;
      bump(this.#opened, f.kind);
    }
    const reason = reasonLabel(f.closeReason);
    bump(this.#closed, `${f.kind}|${reason}`);
    if ((reason === 'dial failed' || reason === 'failed') && f.closeCode) bump(this.#dialErrors, f.closeCode);
    if (f.interface) {
      const b = this.#closedBytes.get(f.interface);
      if (b) {
        b.up += f.bytesUp;
        b.down += f.bytesDown;
      } else this.#closedBytes.set(f.interface, { up: f.bytesUp, down: f.bytesDown });
      this.#recentIfs.set(f.interface, this.#clock.now());
    }
  };

  readonly #onCut = (msg: unknown): void => {
    const m = msg as { egress: string; flows: number; downForMs: number; why: string };
    if (instances > 1 && !this.#recentIfs.has(m.egress) && !this.#flows.list().some((f) => f.interface === m.egress)) return;
    bump(this.#cuts, `${m.egress}|${m.why}`, m.flows);
    this.#push(
      'cut',
      `${m.egress}: ${m.flows} flow${m.flows === 1 ? '' : 's'} cut after ${fmtSeconds(m.downForMs)} (${m.why})`,
      m.egress,
    );
  };

  #onNet(prev: NetSnapshot, next: NetSnapshot, diff: NetDiff): void {
    this.#netChanges++;
    if (diff.routes) this.#routeChanges++;
    for (const line of describeChange(prev, next, diff)) this.#push(line.type, line.text, line.interface);
  }
}

/** "new flows go via if1", "... via if1 (IPv4), if2 (IPv6)", or "no default route yet" */
export function whereNewFlowsGo(snap: NetSnapshot): string {
  const b4 = bestDefault(snap, 4)?.ifname;
  const b6 = bestDefault(snap, 6)?.ifname;
  if (!b4 && !b6) return 'no default route yet';
  if (b4 === b6 || !b4 || !b6) return `new flows go via ${b4 ?? b6}`;
  return `new flows go via ${b4} (IPv4), ${b6} (IPv6)`;
}

function isLinkLocal(ip: string): boolean {
  return /^fe[89ab]/i.test(ip) || ip.startsWith('169.254.');
}

function routesText(rs: readonly { gateway: string | null; metric: number }[]): string {
  const via = rs.map((r) => (r.gateway ? r.gateway : 'direct')).join(', ');
  const metrics = new Set(rs.map((r) => r.metric));
  return metrics.size === 1
    ? `via ${via} (metric ${rs[0].metric})`
    : rs.map((r) => `via ${r.gateway ?? 'direct'} (metric ${r.metric})`).join(', ');
}

/** Feed lines for one network change: what happened to each interface, then where new flows go. */
export function describeChange(
  prev: NetSnapshot,
  next: NetSnapshot,
  diff: NetDiff,
): { type: FeedType; text: string; interface: string | null }[] {
  const out: { type: FeedType; text: string; interface: string | null }[] = [];
  const before = new Map(prev.interfaces.map((i) => [i.name, i]));
  const after = new Map(next.interfaces.map((i) => [i.name, i]));
  const names = new Set([...diff.changed, ...(diff.routes ? [...before.keys(), ...after.keys()] : [])]);
  for (const name of names) {
    const p = before.get(name);
    const n = after.get(name);
    const parts: string[] = [];
    if (!p && n) parts.push('appeared');
    else if (p && !n) parts.push('went away');
    else if (p && n) {
      const wasUp = p.up && p.carrier;
      const isUp = n.up && n.carrier;
      if (!wasUp && isUp) parts.push('came up');
      else if (wasUp && !isUp) parts.push(!n.up ? 'went down' : 'lost carrier');
      else if (p.up !== n.up) parts.push(n.up ? 'is up (no carrier)' : 'is down');
      const fmt = (a: { ip: string; prefixLen: number }) => `${a.ip}/${a.prefixLen}`;
      const pa = new Set(p.addresses.map(fmt));
      const na = new Set(n.addresses.map(fmt));
      const added = n.addresses.filter((a) => !pa.has(fmt(a)) && !isLinkLocal(a.ip)).map(fmt);
      const removed = p.addresses.filter((a) => !na.has(fmt(a)) && !isLinkLocal(a.ip)).map(fmt);
      if (added.length) parts.push(`gained ${added.join(', ')}`);
      if (removed.length) parts.push(`lost ${removed.join(', ')}`);
    }
    if (diff.routes) {
      const key = (r: { family: number; gateway: string | null; metric: number }) => `${r.family}|${r.gateway}|${r.metric}`;
      const pr = new Set((p?.defaultRoutes ?? []).map(key));
      const nr = new Set((n?.defaultRoutes ?? []).map(key));
      const added = (n?.defaultRoutes ?? []).filter((r) => !pr.has(key(r)));
      const removed = (p?.defaultRoutes ?? []).filter((r) => !nr.has(key(r)));
      const s = (l: unknown[]) => (l.length === 1 ? '' : 's');
      if (added.length) parts.push(`default route${s(added)} ${routesText(added)} added`);
      if (removed.length) parts.push(`default route${s(removed)} ${routesText(removed)} removed`);
    }
    if (parts.length) out.push({ type: 'net', text: `${name} ${parts.join('; ')}`, interface: name });
  }
  const moves = ([4, 6] as const)
    .map((family) => ({ family, was: bestDefault(prev, family), now: bestDefault(next, family) }))
    .filter((m) => m.was?.ifname !== m.now?.ifname);
  // IPv4 and IPv6 moving the same way is one event
  const same = moves.length === 2 && moves[0].was?.ifname === moves[1].was?.ifname && moves[0].now?.ifname === moves[1].now?.ifname;
  for (const m of same ? [{ ...moves[0], family: null }] : moves) {
    const fam = m.family === null ? '' : `IPv${m.family} `;
    const text = m.now
      ? `new ${fam}flows now go via ${m.now.ifname}${m.was ? `, was ${m.was.ifname}; live flows stay where they are` : ''}`
      : `no ${fam}default route any more${m.was ? ` (was ${m.was.ifname})` : ''}`;
    out.push({ type: 'route', text, interface: m.now?.ifname ?? null });
  }
  return out;
}
