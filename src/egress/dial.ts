// The dialer: open a TCP socket pinned to an egress (device + source address) and connect it to
// an IP address (never a name). Everything that can be decided once is decided in createDialer;
// dial() only runs. dialAcross() races candidates with staggered starts (DESIGN rule 6).
import { Socket, type SocketConstructorOpts } from 'node:net';
import type { CancelSignal, Dialer, Egress, SubflowProbe, Target } from '../contracts.js';
import {
  DialTimeoutError,
  EgressUnreachableError,
  HfCode,
  HoldfastError,
  codeOfOsError,
  hfCodeOf,
} from '../errors.js';
import type { NativeAddon } from '../native.js';
import { nativeRelay, offloadedTunnel, socketFd } from '../relay-native.js';
import { LateKeepAlive } from '../keepalive.js';
import { RaceLost, staggeredRace } from './race.js';
import { stripZone } from '../net/addr.js';

export interface DialerOptions {
  readonly timeoutMs: number;
  readonly keepAliveMs: number;
  /**
   * Make upstream sockets MPTCP (IPPROTO_MPTCP) where the kernel has it; a server without MPTCP
   * gets plain TCP from the same socket (the kernel falls back). Read per dial (reload).
   */
  readonly mptcp?: boolean;
}

/** socket(IPPROTO_MPTCP) fails with these where the kernel has no MPTCP (or net.mptcp.enabled=0). */
const NO_MPTCP = new Set(['EPROTONOSUPPORT', 'ENOPROTOOPT', 'EINVAL', 'EAFNOSUPPORT']);

export interface DialerHooks {
  /**
   * Called once, the first time `mptcp` is asked for and cannot be had (no MPTCP in the kernel,
   * or no addon); from then on the dialer makes plain TCP sockets.
   */
  readonly onNoMptcp?: (why: string) => void;
  /** Told of each socket that connected, before its dial resolves (own-ends.ts records it there). */
  readonly onDialed?: (socket: Socket, target: Target) => void;
  /**
   * The monitor's epoch (Monitor.epoch): it moves on every link, address or route event, and is
   * undefined while nothing watches. With it, the addon's pinned sockets are made ahead of their
   * dial (`Spares`), and one made in another epoch is never used.
   */
  readonly epoch?: () => number | undefined;
}

/**
 * An upstream socket's constructor options, every one Node's constructor touches, with the values
 * it forces anyway (emitClose false, autoDestroy true, decodeStrings false). net.Socket copies its
 * options ({ ...options }) and then sets those three on the copy; where the caller left them out,
 * V8 11 (Node 20) gives each copy a hidden class of its own, and every socket then pays about 30
 * inline-cache misses in the stream constructors (--log-ic; with them, a sequential CONNECT flow
 * took a quarter more instructions: bench/README.md, eighth pass). With all of them present,
 * every copy shares one map. `fd` undefined: Node makes the socket at connect (no addon).
 */
export function upstreamSocket(fd: number | undefined): Socket {
  const options = {
    fd,
    allowHalfOpen: true,
    // adopted fds are not connected yet: do not start reading
    manualStart: fd !== undefined,
    emitClose: false,
    autoDestroy: true,
    decodeStrings: false,
  };
  return new Socket(options as SocketConstructorOpts);
}

/** openBound's kinds a dial uses: 0 TCP, 2 MPTCP. */
export type SocketKind = 0 | 2;

export function describeAttempt(target: Target, egress: Egress): string {
  const host = target.family === 6 ? `[${target.ip}]` : target.ip;
  return `connect ${host}:${target.port} via ${egress.ifname} (${egress.source})`;
}

/**
 * The dialer. `opts` is read at each dial, so a reload that changes dial.timeout, dial.keepAlive
 * or mptcp in it applies to the next flow (live ones keep what they were given).
 */
export function createDialer(opts: DialerOptions, addon: NativeAddon | undefined, hooks: DialerHooks = {}): Dialer {
  const { onNoMptcp } = hooks;
  /** the MPTCP sockets this dialer made, with their fds (for the subflow probe) */
  const mptcpFds = new WeakMap<Socket, number>();
  let mptcpUsable = true;
  const noMptcp = (why: string) => {
    if (!mptcpUsable) return;
    mptcpUsable = false;
    onNoMptcp?.(why);
  };

  // The binder is chosen once. 'device': the addon makes a socket bound to the interface, and
  // net.Socket adopts it (manualStart: do not start reading an unconnected socket).
  const adopt = (fd: number) => {
    try {
      return upstreamSocket(fd);
    } catch (err) {
      addon!.closeFd(fd);
      throw err;
    }
  };
  // With the addon, the source address is bound (port 0, picked at connect) and TCP_NODELAY is set
  // on the new socket in the same call: one crossing into C, and none of Node's own bind (its
  // SO_REUSEADDR) nor its setNoDelay after the connect. Keepalive as Node 22's libuv sets it: the
  // first probe after dial.keepAlive idle (whole seconds), then one a second, ten unanswered end
  // the connection (Node 20's own setKeepAlive leaves the kernel's 75 s x 9 after the idle). It is
  // set once the flow has lived a second (LateKeepAlive): most flows end sooner and never pay it.
  // Without the addon (or with one built before keepAlive()), Node's setKeepAlive sets the idle.
  const setLate = addon && typeof addon.keepAlive === 'function' ? addon.keepAlive.bind(addon) : undefined;
  const late = new LateKeepAlive(
    setLate
      ? (socket, ms) => {
          const fd = socketFd(socket);
          if (fd >= 0) setLate(fd, secsOf(ms));
        }
      : (socket, ms) => socket.setKeepAlive(true, ms),
  );
  /** A socket pinned to `egress`, made now: MPTCP if asked for and the kernel has it, else TCP. */
  const openPinned = (egress: Egress, kind: SocketKind): Socket => {
    if (kind === 2) {
      let fd: number | undefined;
      try {
        fd = addon!.openBound(egress.family, 2, egress.ifname, egress.source, true);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        // anything else (EMFILE, ENODEV) is this dial's failure, as it would be for TCP
        if (!NO_MPTCP.has(code)) throw err;
        noMptcp(`socket(IPPROTO_MPTCP): ${code}`);
      }
      if (fd !== undefined) {
        const s = adopt(fd);
        mptcpFds.set(s, fd);
        return s;
      }
    }
    return adopt(addon!.openBound(egress.family, 0, egress.ifname, egress.source, true));
  };
  const kindWanted = (): SocketKind => (opts.mptcp && mptcpUsable ? 2 : 0);
  // Spares: with the monitor's epoch to tell when one may be stale, a dial through the addon takes
  // a socket made ahead of it for its egress, and the next one is made a little after it connected.
  const epoch = hooks.epoch;
  const spares = addon && epoch ? new Spares(epoch, openPinned, kindWanted) : undefined;
  const makeSocket: (egress: Egress) => Socket = addon
    ? (egress) => {
        const kind = kindWanted();
        return spares?.take(egress, kind) ?? openPinned(egress, kind);
      }
    : () => {
        if (opts.mptcp) noMptcp('the native addon is missing (Node alone cannot make an MPTCP socket)');
        return upstreamSocket(undefined);
      };

  const mptcpSubflows = addon && typeof addon.mptcpSubflows === 'function' ? addon.mptcpSubflows.bind(addon) : undefined;
  function subflowsOf(socket: Socket): SubflowProbe | undefined {
    const fd = mptcpFds.get(socket);
    if (fd === undefined || !mptcpSubflows) return undefined;
    // a server without MPTCP: the kernel fell back to TCP at the handshake, and says so here
    if (mptcpSubflows(fd) === null) return undefined;
    // the fd is the socket's while it is open; once closed the number may be someone else's.
    // A tunnel on the native relay closed its JS socket: its subflows are read through the relay.
    return () => {
      const id = offloadedTunnel(socket);
      if (id !== undefined) return nativeRelay()?.mptcpSubflows(id) ?? null;
      return socket.destroyed ? null : mptcpSubflows(fd);
    };
  }

  function dial(target: Target, egress: Egress, signal?: CancelSignal): Promise<Socket> {
    return new Promise<Socket>((resolve, reject) => {
      let socket: Socket;
      try {
        socket = makeSocket(egress);
      } catch (err) {
        reject(
          new HoldfastError(
            codeOfOsError(err),
            `${describeAttempt(target, egress)}: ${(err as Error).message}`,
            { cause: err },
          ),
        );
        return;
      }
      new Dialing(socket, target, egress, signal, resolve, reject, by).start(opts.timeoutMs);
    });
  }
  const by: DialContext = {
    bound: addon !== undefined,
    opts,
    onDialed: hooks.onDialed,
    spares,
    late,
  };

  return {
    dial,
    binder: addon ? 'device' : 'source',
    subflowsOf,
    close: () => {
      spares?.close();
      late.close();
    },
    // a flow ended, or waits for its server: a spare asked for there need not wait for its delay
    // (only with spares: without them nobody needs to hear of it)
    spareTime: spares ? (ifname, source) => spares.hurry(ifname, source) : undefined,
    spareSockets: spares ? () => spares.size : undefined,
  };
}

/** What every dial of one dialer shares. */
interface DialContext {
  /**
   * made by the addon: bound to the source, with TCP_NODELAY set; else Node binds at the connect
   * and sets it after
   */
  readonly bound: boolean;
  readonly opts: DialerOptions;
  readonly onDialed: ((socket: Socket, target: Target) => void) | undefined;
  readonly spares: Spares | undefined;
  /** sets keepalive on the socket one to two seconds after the connect, if it is still open */
  readonly late: LateKeepAlive;
}

/** dial.keepAlive in whole seconds, at least one (ms > 0) */
function secsOf(ms: number): number {
  return Math.max(1, Math.floor(ms / 1000));
}

const kDialing = Symbol('holdfast.dialing');
type DialingSocket = Socket & { [kDialing]?: Dialing };

/**
 * One dial in progress: its state and its settling, in one object. The socket's listeners are
 * module-level functions that find it through a symbol, and it listens to the flow's signal as
 * itself (handleEvent): no closure per dial.
 */
class Dialing {
  done = false;
  timer: NodeJS.Timeout | undefined = undefined;

  constructor(
    readonly socket: Socket,
    readonly target: Target,
    readonly egress: Egress,
    readonly signal: CancelSignal | undefined,
    readonly resolve: (s: Socket) => void,
    readonly reject: (err: Error) => void,
    readonly by: DialContext,
  ) {}

  start(timeoutMs: number): void {
    const { socket, target, egress, signal } = this;
    this.by.spares?.dialStarted();
    if (signal?.aborted) return this.handleEvent();
    signal?.addEventListener('abort', this, { once: true });
    (socket as DialingSocket)[kDialing] = this;
    // plain on(): settle() removes both, and each comes at most once before it does
    socket.on('error', onDialError);
    socket.on('connect', onDialConnect);
    this.timer = setTimeout(onDialTimeout, timeoutMs, this, timeoutMs);
    socket.connect(
      this.by.bound
        ? { port: target.port, host: target.ip, family: target.family } // bound by openBound
        : { port: target.port, host: target.ip, family: target.family, localAddress: stripZone(egress.source) },
    );
  }

  settle(err: Error | undefined): void {
    if (this.done) return;
    this.done = true;
    const { socket } = this;
    this.by.spares?.dialSettled();
    if (this.timer) clearTimeout(this.timer);
    this.signal?.removeEventListener('abort', this);
    socket.removeListener('error', onDialError);
    socket.removeListener('connect', onDialConnect);
    (socket as DialingSocket)[kDialing] = undefined;
    if (err) {
      socket.destroy();
      this.reject(err);
      return;
    }
    try {
      this.by.onDialed?.(socket, this.target);
    } catch (bug) {
      // the dial must settle whatever its observer does: this one fails, and its socket closes
      socket.destroy();
      this.reject(bug instanceof Error ? bug : new Error(String(bug)));
      return;
    }
    this.resolve(socket);
  }

  /** The signal's 'abort' (this object is its listener). */
  handleEvent(): void {
    const reason = this.signal?.reason;
    this.settle(reason instanceof Error ? reason : new Error('aborted'));
  }
}

function onDialError(this: DialingSocket, err: Error): void {
  const d = this[kDialing];
  d?.settle(
    new HoldfastError(
      codeOfOsError(err),
      `${describeAttempt(d.target, d.egress)}: ${(err as NodeJS.ErrnoException).code ?? err.message}`,
      { cause: err },
    ),
  );
}

function onDialConnect(this: DialingSocket): void {
  const d = this[kDialing];
  if (!d) return;
  const { by } = d;
  if (!by.bound) this.setNoDelay(true);
  const ms = by.opts.keepAliveMs;
  if (ms > 0) by.late.add(this, ms);
  d.settle(undefined);
  // the next dial through this egress takes a socket made a little later (Spares), or as soon as
  // this flow waits for its server or ends (Dialer.spareTime), whichever comes first
  by.spares?.refill(d.egress);
}

function onDialTimeout(d: Dialing, timeoutMs: number): void {
  d.settle(new DialTimeoutError(`${describeAttempt(d.target, d.egress)}: no answer in ${timeoutMs} ms`));
}

/** A failure that blames the path, so another interface is worth a try. */
export function blamesPath(err: unknown): boolean {
  const code = hfCodeOf(err);
  return (
    code === HfCode.NET_UNREACHABLE || code === HfCode.HOST_UNREACHABLE || code === HfCode.DIAL_TIMEOUT
  );
}

/** The flow's abort, told as the race tells it: the attempt stopped, with the reason's code. */
function stopped(target: Target, egress: Egress, reason: unknown): EgressUnreachableError {
  return new EgressUnreachableError(
    hfCodeOf(reason),
    `${describeAttempt(target, egress)} stopped: ${(reason as Error)?.message ?? 'aborted'}`,
    '',
    reason,
  );
}

/**
 * One candidate (the common case): the dial itself, without a race's timers and controllers,
 * with the outcomes a race of one has: its own error, or `stopped` when the flow aborted it.
 * `won` makes the result from the connected socket, in the same step (the connector builds its
 * leased result there: one promise step after the dial, not one per layer). It owns the socket
 * from then on: if it throws, it closes the socket first (the connector's `leased` does).
 */
export function dialAlone<T>(
  dialer: Dialer,
  target: Target,
  egress: Egress,
  signal: CancelSignal | undefined,
  onFailed: ((egress: Egress, err: unknown) => void) | undefined,
  won: (socket: Socket, egress: Egress) => T,
): Promise<T> {
  if (signal?.aborted) return Promise.reject(stopped(target, egress, signal.reason ?? new Error('aborted')));
  let dialing: Promise<Socket>;
  try {
    dialing = dialer.dial(target, egress, signal);
  } catch (err) {
    dialing = Promise.reject(err);
  }
  // a plain promise chain, not an async function: a new flow's dial passes through no await
  return dialing.then(
    (socket) => won(socket, egress),
    (err: unknown) => {
      if (signal?.aborted) throw stopped(target, egress, signal.reason ?? new Error('aborted'));
      onFailed?.(egress, err);
      throw err;
    },
  );
}

/** What a lone dial that won reports to dialAcross's callers. */
function aloneWon(socket: Socket, egress: Egress): AcrossResult {
  return { socket, egress, attempts: '' };
}

export interface AcrossResult {
  readonly socket: Socket;
  readonly egress: Egress;
  /** the attempts that lost, "eth0 10.1.2.2: HF_DIAL_TIMEOUT; ..." (empty if the first won alone) */
  readonly attempts: string;
}

/**
 * Race `candidates` (best first): the next starts when the previous fails for a reason that
 * blames the path, or after `fallbackDelayMs` without an answer. The first to connect wins; late
 * winners are destroyed. ECONNREFUSED ends the race: the server answered. An attempt that was
 * still silent when another won is reported to `onFailed` as a timeout, so the policy backs off.
 */
export function dialAcross(
  dialer: Dialer,
  target: Target,
  candidates: readonly Egress[],
  fallbackDelayMs: number,
  signal?: CancelSignal,
  onFailed?: (egress: Egress, err: unknown) => void,
): Promise<AcrossResult> {
  if (candidates.length === 1) return dialAlone(dialer, target, candidates[0], signal, onFailed, aloneWon);
  return dialRace(dialer, target, candidates, fallbackDelayMs, signal, onFailed);
}

/** dialAcross for no candidate or several: the staggered race. */
async function dialRace(
  dialer: Dialer,
  target: Target,
  candidates: readonly Egress[],
  fallbackDelayMs: number,
  signal: CancelSignal | undefined,
  onFailed: ((egress: Egress, err: unknown) => void) | undefined,
): Promise<AcrossResult> {
  const describe = (fs: readonly { item: Egress; err: unknown }[]) =>
    fs.map((f) => `${f.item.ifname} ${f.item.source}: ${hfCodeOf(f.err)}`).join('; ');
  // attempts still silent when another won: they lost too, and the flow's attempts name them
  const stalled: { item: Egress; err: unknown }[] = [];
  try {
    const win = await staggeredRace(candidates, (egress, s) => dialer.dial(target, egress, s), {
      delayMs: fallbackDelayMs,
      signal,
      goOn: blamesPath,
      onFailed,
      onStalled: (egress, winner) => {
        const err = new DialTimeoutError(`${describeAttempt(target, egress)}: lost to ${winner.ifname}`);
        stalled.push({ item: egress, err });
        onFailed?.(egress, err);
      },
      dispose: (socket) => socket.destroy(),
    });
    return { socket: win.value, egress: win.item, attempts: describe([...win.failures, ...stalled]) };
  } catch (err) {
    if (!(err instanceof RaceLost)) throw err;
    const lost = err as RaceLost<Egress>;
    // (a lone attempt, which keeps its own error, went through dialAlone) a race reports every attempt
    if (candidates.length === 0) {
      throw new EgressUnreachableError(HfCode.NO_EGRESS, `no interface to try for ${target.ip}`, '');
    }
    const attempts = describe(lost.failures);
    throw new EgressUnreachableError(
      hfCodeOf(lost.last),
      `${describeAttempt(target, candidates[0])} and ${candidates.length - 1} fallback(s) ${
        lost.failures.length ? `failed: ${attempts}` : `stopped: ${(lost.last as Error)?.message ?? 'aborted'}`
      }`,
      attempts,
      lost.last,
    );
  }
}

/** A pinned socket made ahead of its dial, and what it was made for. */
interface Spare {
  readonly socket: Socket;
  readonly kind: SocketKind;
  readonly epoch: number;
  /** a sweep has seen it: the next one closes it if it is still here */
  seen: boolean;
}

/** The spares of one egress (interface and source address), and how many to keep there. */
interface Pool {
  readonly egress: Egress;
  readonly spares: Spare[];
  /** one; one more for each dial that found none here (a burst), up to `maxDepth` */
  depth: number;
}

/**
 * One pinned socket kept ready per egress that dials go through: a new flow's dial takes it and
 * goes straight to connect(), without making a socket and Node adopting its fd on its way (about
 * 40 µs of a CONNECT handshake's 130 warm, 80 of 180 after an idle spell: bench/README "sixth
 * pass"). The next one is made `fillDelayMs` after a dial connected: past that flow's handshake
 * and first exchange, which take about a millisecond here. Made at once, it cost that flow more
 * than the spare saved it (the client's first bytes waited behind it). Or sooner (`hurry`, at the
 * next turn of the loop): when a flow through the egress has written its first bytes upstream,
 * it waits for its server, and the spare is made in that wait (bench/README "thirteenth pass");
 * when one ends, the loop is between flows, so flows back to back find a spare too ("seventh").
 *
 * A spare is used only if it was made in the monitor's current epoch, for the same interface,
 * source address and kind (TCP/MPTCP): a link that went away or came back, an address
 * that moved, a reload, and the spare is closed instead (and the dial makes its own socket). A
 * spare is unconnected and bound to its source with a port reserved (the addon's openBound), so
 * it holds one fd and one local port.
 *
 * A burst (a page opening 50 flows at once) finds one spare and makes the rest of its sockets in
 * front of their connects. So each dial that finds none, on an egress spares are made for, keeps
 * one more for the next burst, up to `maxDepth`; those are made once dials paused for `quietMs`,
 * `batch` at a turn of the loop (`fillDeep`), out of any flow's way (bench/README "ninth pass").
 * One that no dial took for a whole sweep period (30-60 s) is closed and keeps one fewer, and an
 * egress a sweep finds without spares is forgotten; no timer runs without spares.
 */
export class Spares {
  static readonly sweepMs = 30_000;
  static readonly fillDelayMs = 5;
  /** the most spares kept for one egress (each an fd and a local port) */
  static readonly maxDepth = 32;
  /** how long dials must pause before the spares beyond the first are made, and how many a turn */
  static readonly quietMs = 20;
  static readonly batch = 8;
  /**
   * by interface name: a pool per source address (one or two: IPv4, IPv6), made with its first
   * spare; a dial through an egress without one finds none and asks for no more than one
   */
  readonly #byIf = new Map<string, Pool[]>();
  /**
   * the egresses to make a spare for when the fill timer fires (it is pending while non-empty;
   * hurry's fill may come first and empty it, and then that timer finds nothing to do)
   */
  #wanted: Egress[] = [];
  #sweeper: NodeJS.Timeout | undefined;
  #closed = false;
  /** a fill at the next turn of the loop is pending (hurry) */
  #soon = false;
  /** the egresses with fewer spares than their depth, filled when dials pause (fillDeep) */
  #deepWanted: Egress[] = [];
  #deepTimer: NodeJS.Timeout | undefined;
  /** takes so far, and as fillDeep last saw them: it waits until none came for `quietMs` */
  #takes = 0;
  #takesSeen = 0;
  /** dials begun and not yet settled, through any egress */
  #dialing = 0;

  constructor(
    private readonly epoch: () => number | undefined,
    private readonly open: (egress: Egress, kind: SocketKind) => Socket,
    private readonly kind: () => SocketKind,
  ) {}

  /** A dial began (Dialing.start): until it settles, `hurry` waits. */
  dialStarted(): void {
    this.#dialing++;
  }

  /** A dial settled, connected or not (Dialing.settle, once per dial). */
  dialSettled(): void {
    this.#dialing--;
  }

  /** The number of spares kept (for tests and diagnostics). */
  get size(): number {
    let n = 0;
    for (const pools of this.#byIf.values()) for (const pool of pools) n += pool.spares.length;
    return n;
  }

  /** This egress's spare if it is good for a dial now, taken out; a stale one is closed. */
  take(egress: Egress, kind: SocketKind): Socket | undefined {
    this.#takes++;
    const pool = this.#find(egress);
    if (!pool) return undefined;
    const spare = pool.spares.pop();
    if (!spare) {
      // a dial found none: flows start faster than one spare keeps up with (a page load's burst)
      if (pool.depth < Spares.maxDepth) pool.depth++;
      return undefined;
    }
    const epoch = this.epoch();
    if (spare.epoch === epoch && spare.kind === kind && !spare.socket.destroyed) {
      return spare.socket;
    }
    spare.socket.destroy();
    // the network moved since it was made: so did it for every spare of that epoch
    if (spare.epoch !== epoch) this.#closeStale(epoch);
    return undefined;
  }

  /** Make a spare for `egress` soon, if it has fewer than its depth. */
  refill(egress: Egress): void {
    if (this.#closed || this.epoch() === undefined) return;
    const pool = this.#find(egress);
    if (pool && pool.spares.length >= pool.depth) return;
    for (const w of this.#wanted) if (sameEgress(w, egress)) return;
    if (this.#wanted.push(egress) === 1) setTimeout(fill, Spares.fillDelayMs, this).unref();
  }

  /**
   * A flow through this interface and source wrote its first bytes upstream and waits for its
   * server, or ended: a spare asked for there (a dial connected less than `fillDelayMs` ago) is
   * made at the next turn of the loop instead of after the delay. Anything else (no spare asked
   * for: a UDP or BIND flow, a spare made already) is left alone, and so is everything while
   * another dial is on its way (a burst: its flows come first, and the spares it asks for are
   * made after the delay, or once dials pause).
   */
  hurry(ifname: string, source: string): void {
    if (this.#soon || this.#dialing > 0) return;
    for (const w of this.#wanted) {
      if (w.ifname === ifname && w.source === source) {
        this.#soon = true;
        setImmediate(fill, this);
        return;
      }
    }
  }

  /** Make the spares asked for (from the fill timer, or hurried): the first at once, the rest later. */
  fill(): void {
    this.#soon = false;
    const wanted = this.#wanted;
    this.#wanted = [];
    const epoch = this.epoch();
    if (this.#closed || epoch === undefined) return;
    for (const egress of wanted) {
      let pool = this.#find(egress);
      if (!pool || pool.spares.length === 0) pool = this.#make(egress, epoch);
      if (pool && pool.spares.length < pool.depth) this.#wantDeep(egress);
    }
  }

  /**
   * Make the rest of the spares a burst asked for, once no dial took one for `quietMs`: a few at
   * each turn of the loop, so a flow's I/O never waits behind all of them.
   */
  fillDeep(): void {
    this.#deepTimer = undefined;
    const epoch = this.epoch();
    if (this.#closed || epoch === undefined) {
      this.#deepWanted = [];
      return;
    }
    if (this.#takes !== this.#takesSeen) {
      // dials went on since this was armed (or since the last batch): wait for them to pause
      this.#takesSeen = this.#takes;
      this.#deepTimer = setTimeout(fillDeep, Spares.quietMs, this).unref();
      return;
    }
    let budget = Spares.batch;
    while (budget > 0 && this.#deepWanted.length > 0) {
      const egress = this.#deepWanted[0];
      const pool = this.#find(egress);
      if (!pool || pool.spares.length >= pool.depth || !this.#make(egress, epoch)) {
        this.#deepWanted.shift();
        continue;
      }
      budget--;
    }
    if (this.#deepWanted.length > 0) this.#deepTimer = setTimeout(fillDeep, 0, this).unref();
  }

  #wantDeep(egress: Egress): void {
    for (const w of this.#deepWanted) if (sameEgress(w, egress)) return;
    this.#deepWanted.push(egress);
    if (this.#deepTimer !== undefined) return;
    this.#takesSeen = this.#takes;
    this.#deepTimer = setTimeout(fillDeep, Spares.quietMs, this).unref();
  }

  /** One more spare for `egress`, in its pool (made with the first); undefined if socket() failed. */
  #make(egress: Egress, epoch: number): Pool | undefined {
    let socket: Socket;
    const kind = this.kind();
    try {
      socket = this.open(egress, kind);
    } catch {
      return undefined; // the next dial through it makes its own socket, and meets the error itself
    }
    let pool = this.#find(egress);
    if (!pool) {
      pool = { egress, spares: [], depth: 1 };
      const pools = this.#byIf.get(egress.ifname);
      if (pools) pools.push(pool);
      else this.#byIf.set(egress.ifname, [pool]);
    }
    pool.spares.push({ socket, kind, epoch, seen: false });
    if (this.#sweeper === undefined) this.#sweeper = setInterval(sweep, Spares.sweepMs, this).unref();
    return pool;
  }

  /**
   * Close the spares no dial took since the last sweep (each keeps one fewer), and those of
   * another epoch; forget an egress found without spares (addresses come and go).
   */
  sweep(): void {
    const epoch = this.epoch();
    for (const [ifname, pools] of this.#byIf) {
      const kept = pools.filter((pool) => {
        if (pool.spares.length === 0) return false;
        let n = 0;
        for (const s of pool.spares) {
          if (s.seen || s.epoch !== epoch) {
            s.socket.destroy();
            // one that no dial took for a whole period: the bursts that asked for it are over
            if (s.seen && pool.depth > 1) pool.depth--;
          } else {
            s.seen = true;
            pool.spares[n++] = s;
          }
        }
        pool.spares.length = n;
        return true;
      });
      if (kept.length) this.#byIf.set(ifname, kept);
      else this.#byIf.delete(ifname);
    }
    if (this.#byIf.size === 0) this.#stopSweeping();
  }

  /** Close every spare; no more are made. */
  close(): void {
    this.#closed = true;
    this.#wanted = [];
    this.#deepWanted = [];
    if (this.#deepTimer !== undefined) clearTimeout(this.#deepTimer);
    this.#deepTimer = undefined;
    for (const pools of this.#byIf.values()) for (const pool of pools) for (const s of pool.spares) s.socket.destroy();
    this.#byIf.clear();
    this.#stopSweeping();
  }

  #stopSweeping(): void {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /** Close every spare made in another epoch than `epoch` (their pools, and depths, stay). */
  #closeStale(epoch: number | undefined): void {
    for (const pools of this.#byIf.values()) {
      for (const pool of pools) {
        let n = 0;
        for (const s of pool.spares) {
          if (s.epoch === epoch) pool.spares[n++] = s;
          else s.socket.destroy();
        }
        pool.spares.length = n;
      }
    }
  }

  #find(egress: Egress): Pool | undefined {
    const pools = this.#byIf.get(egress.ifname);
    if (pools) for (const pool of pools) if (sameEgress(pool.egress, egress)) return pool;
    return undefined;
  }
}

function sameEgress(a: Egress, b: Egress): boolean {
  return a.ifname === b.ifname && a.source === b.source && a.family === b.family;
}

function fill(spares: Spares): void {
  spares.fill();
}

function fillDeep(spares: Spares): void {
  spares.fillDeep();
}

function sweep(spares: Spares): void {
  spares.sweep();
}
