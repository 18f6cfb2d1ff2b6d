// Flows and the flow table. A flow is one upstream conversation (DESIGN rule 1). The table knows
// every live flow and tells its subscribers of each open, close and cut (onChange: the views'
// feed); it listens to the monitor for one thing only: a pinned interface that lost carrier or the
// flow's address for longer than the grace period gets its flows cut, so applications reconnect
// instead of hanging.
import type { Logger } from 'pino';
import type {
  Clock,
  CloseReason,
  Destination,
  DialResult,
  FlowInfo,
  FlowKind,
  Lease,
  NetMonitor,
  NetSnapshot,
  PlacedBy,
} from './contracts.js';
import { EgressLostError, LimitError, hfCodeOf } from './errors.js';
import { formatHostPort } from './config.js';
import { channels } from './diagnostics.js';
import { lossOf } from './net/monitor.js';

export type CutHandler = (err: Error) => void;

/**
 * What the flow table tells its subscribers: a flow pinned ('open'; again if the plain-HTTP
 * forwarder pins it anew on another interface), a flow ended ('close', once, after it left the
 * table), or flows cut because their interface was lost ('cut').
 */
export type FlowEvent =
  | { readonly type: 'open'; readonly flow: Flow }
  | { readonly type: 'close'; readonly flow: Flow }
  | { readonly type: 'cut'; readonly egress: string; readonly flows: number; readonly downForMs: number; readonly why: string };

/** The reasons that are failures: only these carry an HF_* code (DESIGN rule 9). */
const FAILURES: ReadonlySet<CloseReason> = new Set<CloseReason>(['cut', 'dial failed', 'timeout', 'upstream error', 'failed']);

/** Is `reason` a failure (so the flow's end carries a code)? */
export function isFailure(reason: CloseReason): boolean {
  return FAILURES.has(reason);
}

/** "1.2.3.4:5" -> "1.2.3.4", "[::1]:5" -> "::1" */
function addressOf(client: string): string {
  if (client.startsWith('[')) return client.slice(1, client.indexOf(']'));
  const i = client.lastIndexOf(':');
  return i < 0 ? client : client.slice(0, i);
}

export class Flow {
  readonly id: number;
  readonly kind: FlowKind;
  readonly client: string;
  /** "host:port" as the client asked; a UDP association shows its first datagram's */
  destination: string;
  readonly dst: Destination;
  readonly startedAt: number;
  ip: string | null = null;
  interface: string | null = null;
  localAddress: string | null = null;
  placedBy: PlacedBy | null = null;
  /** the attempts that lost before this flow was pinned ("if2 10.1.2.2: HF_DIAL_TIMEOUT"), if any */
  attempts: string | null = null;
  bytesUp = 0;
  bytesDown = 0;
  /** set when the flow ends: why, and the HF_* code if that is a failure */
  closeReason: CloseReason | null = null;
  closeCode: string | null = null;
  endedAt: number | null = null;
  /** extra per-kind counters (UDP datagrams), shown in /status when set */
  datagramsUp?: number;
  datagramsDown?: number;
  /** times the upstream was resumed on a new connection (the HTTP forwarder's Range requests) */
  resumed = 0;
  #rootLog: Logger;
  #log: Logger | undefined;
  #table: FlowTable;
  #onCut: CutHandler | undefined;
  #ended = false;
  #cutReason: Error | undefined;
  #cutAs: CloseReason = 'cut';
  /** what this flow holds (its affinity placement), given back once when it ends */
  #leases: Lease[] | undefined;

  constructor(table: FlowTable, id: number, kind: FlowKind, client: string, dst: Destination, log: Logger, now: number) {
    this.#table = table;
    this.id = id;
    this.kind = kind;
    this.client = client;
    this.dst = dst;
    this.destination = formatHostPort(dst.host, dst.port);
    this.startedAt = now;
    this.#rootLog = log;
  }

  /**
   * A logger bound to this flow, made on first use. The 'flow open' and 'flow close' lines are
   * written through the root logger with the same fields, so a flow that logs nothing else keeps
   * no child logger (10,000 idle tunnels are 10,000 fewer objects).
   */
  get log(): Logger {
    return (this.#log ??= this.#rootLog.child({ flow: this.id, kind: this.kind, client: this.client }));
  }

  /** One line through the root logger with this flow's bindings, as a child would write it. */
  #line(fields: Record<string, unknown>, msg: string): void {
    const log = this.#log ?? this.#rootLog;
    if (!log.isLevelEnabled('info')) return;
    if (this.#log) this.#log.info(fields, msg);
    else this.#rootLog.info({ flow: this.id, kind: this.kind, client: this.client, ...fields }, msg);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** The upstream is connected: record where, and write the one 'flow open' line. */
  pinned(r: Pick<DialResult, 'egress' | 'target' | 'localAddress' | 'attempts'>, destination?: Destination): void {
    if (destination) this.destination = formatHostPort(destination.host, destination.port);
    this.ip = r.target.ip;
    this.interface = r.egress.ifname;
    this.localAddress = r.localAddress;
    this.placedBy = r.egress.placedBy;
    this.attempts = r.attempts || null;
    this.#line(
      {
        dst: this.destination,
        ip: r.target.ip,
        egress: r.egress.ifname,
        src: r.localAddress,
        placedBy: r.egress.placedBy,
        ...(r.attempts ? { attempts: r.attempts } : {}),
      },
      'flow open',
    );
    this.#table.emit({ type: 'open', flow: this });
    if (channels.flowOpen.hasSubscribers) channels.flowOpen.publish(this);
  }

  /** How to cut this flow (the inbound handler knows its sockets and protocol). */
  onCut(fn: CutHandler): void {
    this.#onCut = fn;
  }

  /**
   * Hold `lease` until this flow ends, then give it back (once, whatever ends the flow). A flow
   * that has already ended gives it back at once.
   */
  hold(lease: Lease): void {
    if (this.#ended) lease.release();
    else (this.#leases ??= []).push(lease);
  }

  /**
   * The upstream moved: a new connection on `r.egress` continues this flow (the HTTP forwarder
   * resumed a download at `offset`). Clears a cut in progress, gives back what the flow held and
   * holds `lease` instead; one 'flow resumed' line.
   */
  moved(r: Pick<DialResult, 'egress' | 'target' | 'localAddress'>, lease: Lease, offset: number): void {
    if (this.#ended) {
      lease.release();
      return;
    }
    const from = this.interface;
    this.#cutReason = undefined;
    this.#cutAs = 'cut';
    const leases = this.#leases;
    this.#leases = [lease];
    if (leases) for (const l of leases) l.release();
    this.ip = r.target.ip;
    this.interface = r.egress.ifname;
    this.localAddress = r.localAddress;
    this.placedBy = r.egress.placedBy;
    this.resumed++;
    this.#line({ from, to: r.egress.ifname, ip: r.target.ip, src: r.localAddress, offset, resumed: this.resumed }, 'flow resumed');
  }

  /**
   * Cut now: an error reply where one can still be sent, else a reset. Safe to repeat: returns
   * false if the flow was already ended or cut. `as` is the reason the end reports: 'cut' (the
   * interface was lost) or 'shutdown' (holdfast stops; no code).
   */
  cut(err: Error, as: 'cut' | 'shutdown' = 'cut'): boolean {
    if (this.#ended || this.#cutReason) return false;
    this.#cutReason = err;
    this.#cutAs = as;
    const fn = this.#onCut;
    if (fn) fn(err);
    else this.end('cut', err);
    return true;
  }

  /**
   * The flow is over: give back what it holds, and write the one 'flow close' line. Safe to
   * repeat. A flow that was cut ends as 'cut' (or 'shutdown') whatever its handler reports; only
   * a failure carries a code (a client that left, an idle timeout or a peer's reset do not).
   */
  end(reason: CloseReason, err?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    const leases = this.#leases;
    this.#leases = undefined;
    if (leases) for (const l of leases) l.release();
    const closeReason = this.#cutReason ? this.#cutAs : reason;
    const cause = this.#cutReason ?? err;
    const code = cause && isFailure(closeReason) ? hfCodeOf(cause) : undefined;
    this.endedAt = this.#table.clock.now();
    this.closeReason = closeReason;
    this.closeCode = code ?? null;
    this.#line(
      {
        reason: this.closeReason,
        ...(code ? { code } : {}),
        // a flow whose dial failed has only this line: say what it was for
        ...(this.interface === null ? { dst: this.destination } : {}),
        bytesUp: this.bytesUp,
        bytesDown: this.bytesDown,
        durationMs: this.endedAt - this.startedAt,
      },
      'flow close',
    );
    this.#table.remove(this);
    this.#table.emit({ type: 'close', flow: this });
    if (channels.flowClose.hasSubscribers) channels.flowClose.publish(this);
  }

  toJSON(): FlowInfo & { datagramsUp?: number; datagramsDown?: number } {
    return {
      id: this.id,
      kind: this.kind,
      client: this.client,
      dst: this.destination,
      ip: this.ip,
      egress: this.interface,
      src: this.localAddress,
      placedBy: this.placedBy,
      ...(this.attempts ? { attempts: this.attempts } : {}),
      startedAt: this.startedAt,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      ...(this.resumed > 0 ? { resumed: this.resumed } : {}),
      ...(this.datagramsUp !== undefined ? { datagramsUp: this.datagramsUp, datagramsDown: this.datagramsDown } : {}),
    };
  }
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
  /** live flows per client address */
  readonly #perClient = new Map<string, number>();
  readonly #flows = new Map<number, Flow>();
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
    if (this.#flows.size >= this.#limits.maxFlows) {
      throw new LimitError(`too many flows (${this.#flows.size}, limits.maxFlows)`);
    }
    // counted always, so a reload that sets a per-client limit counts the live flows too
    const perClient = this.#limits.maxFlowsPerClient;
    const ip = addressOf(client);
    const n = this.#perClient.get(ip) ?? 0;
    if (perClient > 0 && n >= perClient) throw new LimitError(`too many flows from ${ip} (${n}, limits.maxFlowsPerClient)`);
    this.#perClient.set(ip, n + 1);
    const f = new Flow(this, this.#nextId++, kind, client, dst, this.#log, this.clock.now());
    this.#flows.set(f.id, f);
    if (this.#flows.size === 1 && this.#monitor && !this.#release) this.#release = this.#monitor.watchClosely();
    this.totals.opened++;
    return f;
  }

  remove(f: Flow): void {
    if (!this.#flows.delete(f.id)) return;
    if (this.#flows.size === 0) {
      this.#release?.();
      this.#release = undefined;
    }
    const ip = addressOf(f.client);
    const n = this.#perClient.get(ip);
    if (n !== undefined) {
      if (n <= 1) this.#perClient.delete(ip);
      else this.#perClient.set(ip, n - 1);
    }
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
    return this.#flows.size;
  }

  list(): Flow[] {
    return [...this.#flows.values()];
  }

  /** Watch the monitor: start a grace timer per interface that broke, cut when it runs out. */
  watch(monitor: NetMonitor): void {
    this.#monitor = monitor;
    this.#unsubscribe = monitor.onChange((_prev, next) => this.#check(next));
    if (this.#flows.size > 0 && !this.#release) this.#release = monitor.watchClosely();
  }

  #check(snap: NetSnapshot): void {
    const broken = new Set<string>();
    for (const f of this.#flows.values()) {
      if (f.interface && lossOf(snap, f.interface, f.localAddress)) broken.add(f.interface);
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

  /** Cut every flow pinned to `ifname` whose path is still broken. Safe to repeat. */
  cutEgress(ifname: string, since = this.clock.now()): number {
    const snap = this.#monitor?.current();
    let n = 0;
    let why = 'cut';
    for (const f of [...this.#flows.values()]) {
      if (f.interface !== ifname) continue;
      const loss = snap ? lossOf(snap, ifname, f.localAddress) : 'cut';
      if (!loss) continue;
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
