// A flow: one upstream conversation (DESIGN rule 1): a SOCKS5 CONNECT, UDP association or BIND,
// an HTTP CONNECT tunnel, or one forwarded plain-HTTP request. It knows where it is pinned, holds
// its leases, and ends once with a reason (flow open / flow close lines); the FlowTable
// (flows.ts) keeps the live ones and cuts them when their interface is lost.
import type { Logger } from 'pino';
import type {
  CloseReason,
  Destination,
  DialResult,
  FlowInfo,
  FlowKind,
  Lease,
  PlacedBy,
  SubflowProbe,
} from './contracts.js';
import { hfCodeOf } from './errors.js';
import { formatHostPort } from './config.js';
import { channels } from './diagnostics.js';
import type { FlowTable } from './flows.js';

export type CutHandler = (err: Error) => void;

/**
 * What the flow table tells its subscribers: a flow pinned ('open'; again if the plain-HTTP
 * forwarder pins it anew on another interface), a flow ended ('close', once, after it left the
 * table), or flows cut because their interface was lost ('cut').
 */
export type FlowEvent =
  | { readonly type: 'open'; readonly flow: Flow }
  | { readonly type: 'close'; readonly flow: Flow }
  | { readonly type: 'cut'; readonly egress: string; readonly flows: number; readonly downForMs: number; readonly why: string }
  /** an MPTCP flow whose pinned interface was lost went on over its subflow on `to` */
  | { readonly type: 'moved'; readonly flow: Flow; readonly from: string | null; readonly to: string; readonly why: string };

/** The reasons that are failures: only these carry an HF_* code (DESIGN rule 9). */
const FAILURES: ReadonlySet<CloseReason> = new Set<CloseReason>(['cut', 'dial failed', 'timeout', 'upstream error', 'failed']);

/** Is `reason` a failure (so the flow's end carries a code)? */
export function isFailure(reason: CloseReason): boolean {
  return FAILURES.has(reason);
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
  /** the interface this flow was pinned to before its MPTCP connection moved off it */
  movedFrom: string | null = null;
  /** an MPTCP upstream's subflows (set by pinned() when the dialer made one) */
  subflowProbe: SubflowProbe | undefined;
  /** where the flow table keeps it while it is live (-1 once removed); the table's own field */
  slot = -1;
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
  pinned(
    r: Pick<DialResult, 'egress' | 'target' | 'localAddress' | 'attempts'> & { readonly subflows?: SubflowProbe },
    destination?: Destination,
  ): void {
    if (destination) this.destination = formatHostPort(destination.host, destination.port);
    this.subflowProbe = r.subflows;
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
        ...(r.subflows ? { transport: 'mptcp' } : {}),
      },
      'flow open',
    );
    this.#table.emit({ type: 'open', flow: this });
    if (channels.flowOpen.hasSubscribers) channels.flowOpen.publish(this);
  }

  /**
   * The pinned interface broke, but the MPTCP connection has a live subflow from `local` on
   * `ifname`: the flow now counts as that interface's (its grace and cut follow that one).
   */
  moved(ifname: string, local: string, why: string, subflows: readonly string[]): void {
    const from = this.interface;
    this.movedFrom = from;
    this.interface = ifname;
    this.localAddress = local;
    this.log.warn({ from, to: ifname, src: local, why, subflows }, 'flow moved');
    this.#table.emit({ type: 'moved', flow: this, from, to: ifname, why });
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
   * The upstream was resumed: a new connection on `r.egress` continues this flow (the HTTP
   * forwarder resumed a download at `offset`). Clears a cut in progress, gives back what the flow
   * held and holds `lease` instead; one 'flow resumed' line.
   */
  resumedOn(r: Pick<DialResult, 'egress' | 'target' | 'localAddress'>, lease: Lease, offset: number): void {
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
        ...(this.resumed > 0 ? { resumed: this.resumed } : {}),
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
      ...this.#mptcpView(),
    };
  }

  #mptcpView(): { transport?: 'mptcp'; subflows?: string[]; movedFrom?: string } {
    const subs = this.#ended ? null : this.subflowProbe?.();
    if (!subs) return this.movedFrom ? { movedFrom: this.movedFrom } : {};
    return {
      transport: 'mptcp',
      subflows: this.#table.subflowInterfaces(subs),
      ...(this.movedFrom ? { movedFrom: this.movedFrom } : {}),
    };
  }
}
