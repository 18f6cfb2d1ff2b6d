// The flow table. It knows every live flow (flow.ts) and tells its subscribers of each open,
// close, move and cut (onChange: the views' feed); it listens to the monitor for one thing only: a
// pinned interface that lost carrier or the flow's address for longer than the grace period gets
// its flows cut (or moved, for an MPTCP flow with a live subflow elsewhere), so applications
// reconnect instead of hanging.
import type { Clock, Destination, FlowKind, NetMonitor, NetSnapshot } from './contracts.js';
import type { Logger } from 'pino';
import { EgressLostError, LimitError } from './errors.js';
import { channels } from './diagnostics.js';
import { Flow, type FlowEvent } from './flow.js';
import { lossOf } from './net/monitor.js';
import { ifnameOf, liveSubflow } from './net/subflows.js';

export { Flow, isFailure, type CutHandler, type FlowEvent } from './flow.js';

/** "1.2.3.4:5" -> "1.2.3.4", "[::1]:5" -> "::1" */
function addressOf(client: string): string {
  if (client.startsWith('[')) return client.slice(1, client.indexOf(']'));
  const i = client.lastIndexOf(':');
  return i < 0 ? client : client.slice(0, i);
}

export interface FlowLimits {
  /** flows at once */
  readonly maxFlows: number;
  /** flows at once per client address; 0 = no limit */
  readonly maxFlowsPerClient: number;
}

export interface FlowTableOptions {
  readonly graceMs: number;
  readonly limits?: FlowLimits;
  readonly log: Logger;
  readonly clock: Clock;
}

export class FlowTable {
  readonly clock: Clock;
  readonly #log: Logger;
  #graceMs: number;
  #limits: FlowLimits;
  /**
   * live flows per client address. An address whose count falls to 0 keeps its entry (pruned once
   * there are many): a Map that empties allocates a new table, which every flow would pay when
   * one client opens one flow after another.
   */
  readonly #perClient = new Map<string, number>();
  /** addresses with a live flow (entries of #perClient above 0) */
  #clients = 0;
  /**
   * The live flows in the order they opened; a flow that ended leaves a hole (undefined) until
   * the holes are half the array, then it is compacted. Each flow knows its slot (Flow.slot): no
   * hash table to grow or shrink per flow.
   */
  #slots: (Flow | undefined)[] = [];
  #live = 0;
  #nextId = 1;
  /** per interface: the pending grace timer and when the loss began */
  readonly #grace = new Map<string, { cancel(): void; since: number }>();
  #monitor: NetMonitor | undefined;
  #unsubscribe: (() => void) | undefined;
  /** the monitor's close watch, held while the table has flows (a loss is seen sooner) */
  #release: (() => void) | undefined;
  /** counters for /status and metrics */
  readonly totals = { opened: 0, cut: 0 };
  readonly #listeners = new Set<(e: FlowEvent) => void>();

  constructor(opts: FlowTableOptions) {
    this.clock = opts.clock;
    this.#log = opts.log;
    this.#graceMs = opts.graceMs;
    this.#limits = opts.limits ?? { maxFlows: Infinity, maxFlowsPerClient: 0 };
  }

  /** New settings (a reload): apply to flows opened and losses noticed from now on. */
  configure(opts: { graceMs: number; limits: FlowLimits }): void {
    this.#graceMs = opts.graceMs;
    this.#limits = opts.limits;
  }

  /** Open a flow; throws LimitError (HF_LIMIT) when a flow limit is reached. */
  open(kind: FlowKind, client: string, dst: Destination): Flow {
    if (this.#live >= this.#limits.maxFlows) {
      throw new LimitError(`too many flows (${this.#live}, limits.maxFlows)`);
    }
    // counted always, so a reload that sets a per-client limit counts the live flows too
    const perClient = this.#limits.maxFlowsPerClient;
    const ip = addressOf(client);
    const n = this.#perClient.get(ip) ?? 0;
    if (perClient > 0 && n >= perClient) throw new LimitError(`too many flows from ${ip} (${n}, limits.maxFlowsPerClient)`);
    this.#perClient.set(ip, n + 1);
    if (n === 0) this.#clients++;
    const f = new Flow(this, this.#nextId++, kind, client, dst, this.#log, this.clock.now());
    f.slot = this.#slots.length;
    this.#slots.push(f);
    if (++this.#live === 1 && this.#monitor && !this.#release) this.#release = this.#monitor.watchClosely();
    this.totals.opened++;
    return f;
  }

  remove(f: Flow): void {
    const slots = this.#slots;
    if (f.slot < 0 || slots[f.slot] !== f) return;
    slots[f.slot] = undefined;
    f.slot = -1;
    if (--this.#live === 0) {
      this.#release?.();
      this.#release = undefined;
    }
    if (this.#live * 2 < slots.length && slots.length >= 64) this.#compact();
    const ip = addressOf(f.client);
    const n = this.#perClient.get(ip);
    if (n === undefined) return;
    this.#perClient.set(ip, n - 1);
    if (n !== 1) return;
    // this address has no live flow now: its entry stays, until most entries are such
    this.#clients--;
    if (this.#perClient.size > 1024 && this.#clients * 2 < this.#perClient.size) {
      for (const [k, v] of this.#perClient) if (v <= 0) this.#perClient.delete(k);
    }
  }

  /** Close the holes, keeping the order flows opened in. */
  #compact(): void {
    let j = 0;
    const slots = this.#slots;
    for (let i = 0; i < slots.length; i++) {
      const f = slots[i];
      if (f === undefined) continue;
      f.slot = j;
      slots[j++] = f;
    }
    slots.length = j;
  }

  /**
   * Called for every flow event of this table, in the flow's own stack (a view's counters are
   * right the moment a flow ends). Returns an unsubscribe function.
   */
  onChange(fn: (e: FlowEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** For Flow: tell the subscribers. One that throws stops neither the others nor the flow. */
  emit(e: FlowEvent): void {
    for (const fn of this.#listeners) {
      try {
        fn(e);
      } catch (err) {
        this.#log.error({ err }, 'flow table listener failed');
      }
    }
  }

  get size(): number {
    return this.#live;
  }

  list(): Flow[] {
    const out: Flow[] = [];
    for (const f of this.#slots) if (f !== undefined) out.push(f);
    return out;
  }

  /** Watch the monitor: start a grace timer per interface that broke, cut when it runs out. */
  watch(monitor: NetMonitor): void {
    this.#monitor = monitor;
    this.#unsubscribe = monitor.onChange((_prev, next) => this.#check(next));
    if (this.#live > 0 && !this.#release) this.#release = monitor.watchClosely();
  }

  #check(snap: NetSnapshot): void {
    const broken = new Set<string>();
    for (const f of this.#slots) {
      if (f && f.interface && lossOf(snap, f.interface, f.localAddress)) broken.add(f.interface);
    }
    // healed interfaces: cancel their grace
    for (const [ifname, g] of this.#grace) {
      if (!broken.has(ifname)) {
        g.cancel();
        this.#grace.delete(ifname);
        this.#log.info({ egress: ifname, downForMs: this.clock.now() - g.since }, 'egress healed');
      }
    }
    for (const ifname of broken) {
      if (this.#grace.has(ifname)) continue;
      const since = this.clock.now();
      if (this.#graceMs <= 0) {
        this.cutEgress(ifname, since);
        continue;
      }
      const t = this.clock.setTimeout(() => {
        this.#grace.delete(ifname);
        this.cutEgress(ifname, since);
      }, this.#graceMs);
      this.#grace.set(ifname, { cancel: t.cancel, since });
    }
  }

  /** The interface name of each subflow's local address (the address itself if no interface has it). */
  subflowInterfaces(subs: readonly { local: string }[]): string[] {
    const snap = this.#monitor?.current();
    return subs.map((s) => (snap ? ifnameOf(snap, s.local) : undefined) ?? s.local);
  }

  /** Cut every flow pinned to `ifname` whose path is still broken. Safe to repeat. */
  cutEgress(ifname: string, since = this.clock.now()): number {
    const snap = this.#monitor?.current();
    let n = 0;
    let why = 'cut';
    for (const f of this.list()) {
      if (f.interface !== ifname) continue;
      const loss = snap ? lossOf(snap, ifname, f.localAddress) : 'cut';
      if (!loss) continue;
      // an MPTCP connection with a live subflow elsewhere is not cut: it moved
      const live = snap && f.subflowProbe ? liveSubflow(snap, ifname, f.subflowProbe) : undefined;
      if (live) {
        f.moved(live.ifname, live.local, loss, live.all);
        continue;
      }
      why = loss;
      if (f.cut(new EgressLostError(`${ifname}: ${loss} for ${this.clock.now() - since} ms (grace ${this.#graceMs} ms)`))) n++;
    }
    if (n > 0) {
      this.totals.cut += n;
      const downForMs = this.clock.now() - since;
      this.#log.warn({ egress: ifname, flows: n, downForMs, why }, 'egress cut');
      const cut = { egress: ifname, flows: n, downForMs, why };
      this.emit({ type: 'cut', ...cut });
      if (channels.egressCut.hasSubscribers) channels.egressCut.publish(cut);
    }
    return n;
  }

  close(): void {
    this.#unsubscribe?.();
    this.#release?.();
    this.#release = undefined;
    for (const g of this.#grace.values()) g.cancel();
    this.#grace.clear();
  }
}
