// The one place that watches holdfast for people and scrapers: once a second it samples the flow
// table into per-interface throughput (a five-minute ring) and per-flow rates; it subscribes to
// the flow table's change feed (flows opening and closing, cuts) and to the monitor's (network
// changes); it keeps the counters /metrics shows and a short feed of events (route changes, cuts,
// fallbacks). /status, the dashboard, `holdfast status` and /metrics are views of it.
//
// Cost: one pass over the live flows per second, and a few map updates per flow open/close.
// Nothing per chunk: the relay's plain counters are read, never hooked.
import type { Clock, NetMonitor, NetSnapshot } from '../contracts.js';
import type { Flow, FlowEvent, FlowTable } from '../flows.js';
import { FlowCounters, type StatsCounters } from './counters.js';
import { describeChange, Feed, fmtSeconds, whereNewFlowsGo, type FeedEvent } from './feed.js';
import { History, type HistoryJson, type IfRates } from './history.js';
import { notify } from './notify.js';
import { statusOf, type Binder, type StatusJson, type StatusRates } from './status.js';

export { reasonLabel, type StatsCounters } from './counters.js';
export { describeChange, whereNewFlowsGo, type FeedEvent, type FeedType } from './feed.js';
export type { HistoryJson, HistorySeries } from './history.js';

/** The newest sample: time (s) and per interface [down, up] bytes/s. */
export interface SamplePoint {
  readonly t: number;
  readonly ifs: IfRates;
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

type Rates = Map<string, { up: number; down: number }>;

export class Stats {
  readonly #flows: FlowTable;
  readonly #monitor: NetMonitor;
  readonly #binder: Binder;
  readonly #clock: Pick<Clock, 'now'>;
  readonly #sampleMs: number;
  readonly startedAt: number;
  readonly #counters = new FlowCounters();
  readonly #history: History;
  readonly #feed: Feed;

  // the last sample
  #lastMono = 0;
  #lastTotals: Rates = new Map();
  #ifRates: Rates = new Map();
  #flowLast = new Map<number, { up: number; down: number }>();
  #flowRates = new Map<number, { up: number; down: number }>();
  #lastPoint: SamplePoint | undefined;

  #timer: NodeJS.Timeout | undefined;
  readonly #unwatch: (() => void)[];
  readonly #tickListeners = new Set<(p: SamplePoint) => void>();
  #closedFlag = false;

  constructor(o: StatsOptions) {
    this.#flows = o.flows;
    this.#monitor = o.monitor;
    this.#binder = o.binder;
    this.#clock = o.clock ?? { now: () => Date.now() };
    this.#sampleMs = o.sampleMs ?? 1000;
    this.#history = new History(o.historySize ?? 300);
    this.#feed = new Feed(this.#clock, o.feedSize ?? 100);
    this.startedAt = this.#clock.now();
    this.#lastMono = performance.now();
    this.#unwatch = [
      o.flows.onChange((e) => this.#onFlow(e)),
      o.monitor.onChange((prev, next, diff) => {
        this.#counters.netChanges++;
        if (diff.routes) this.#counters.routeChanges++;
        for (const line of describeChange(prev, next, diff)) this.#feed.push(line.type, line.text, line.interface);
      }),
    ];
    this.#feed.push('start', `holdfast started; ${whereNewFlowsGo(o.monitor.current())}`, null);
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
    this.#feed.close();
    for (const u of this.#unwatch) u();
  }

  /** Called after every sample with the newest point. Returns an unsubscribe function. */
  onSample(fn: (p: SamplePoint) => void): () => void {
    this.#tickListeners.add(fn);
    return () => this.#tickListeners.delete(fn);
  }

  /** Called for every new feed event (a route change, a cut...). Returns an unsubscribe function. */
  onEvent(fn: (e: FeedEvent) => void): () => void {
    return this.#feed.onEvent(fn);
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
    return this.#history.toJSON();
  }

  lastSample(): SamplePoint | undefined {
    return this.#lastPoint;
  }

  /** Feed events with seq > after, oldest first. */
  events(after = 0): FeedEvent[] {
    return this.#feed.after(after);
  }

  counters(): StatsCounters {
    return this.#counters;
  }

  /** Bytes relayed per interface since start (ended flows plus live ones), read now. */
  bytesByInterface(live: readonly Flow[] = this.#flows.list()): Rates {
    const out: Rates = new Map();
    for (const [name, b] of this.#counters.closedBytes) out.set(name, { up: b.up, down: b.down });
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
    }
    this.#flowLast = flowLast;
    this.#flowRates = flowRates;

    // per interface: cumulative bytes now minus at the last sample
    const totals = this.bytesByInterface(live);
    const ifRates: Rates = new Map();
    for (const [name, b] of totals) {
      const prev = this.#lastTotals.get(name) ?? { up: 0, down: 0 };
      ifRates.set(name, { up: Math.max(0, b.up - prev.up) / dt, down: Math.max(0, b.down - prev.down) / dt });
    }
    this.#lastTotals = totals;
    this.#ifRates = ifRates;

    // the ring: interfaces the host has now (not loopback unless it carried bytes)
    const present = new Map<string, number>();
    for (const i of this.#monitor.current().interfaces) if (!i.loopback || totals.has(i.name)) present.set(i.name, i.index);
    const point: SamplePoint = { t: now / 1000, ifs: this.#history.record(now / 1000, present, ifRates) };
    this.#lastPoint = point;
    notify(this.#tickListeners, point);
    return point;
  }

  // ---- the flow table's events ----------------------------------------------------------------

  #onFlow(e: FlowEvent): void {
    const said = this.#counters.count(e);
    if (said) {
      const f = said.fallback;
      this.#feed.push('fallback', `flow #${f.id} (${f.kind}) to ${f.destination} fell back to ${f.interface}`, f.interface);
    } else if (e.type === 'moved') {
      const f = e.flow;
      this.#feed.push('moved', `flow #${f.id} (${f.kind}) to ${f.destination} moved from ${e.from} to ${e.to} (${e.why}): MPTCP`, e.to);
    } else if (e.type === 'cut') {
      const text = `${e.egress}: ${e.flows} flow${e.flows === 1 ? '' : 's'} cut after ${fmtSeconds(e.downForMs)} (${e.why})`;
      this.#feed.push('cut', text, e.egress);
    }
  }
}
