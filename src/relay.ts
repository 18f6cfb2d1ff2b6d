// The byte relay between a client socket and its upstream. Each direction ends alone (a clean
// end half-closes the other side); an error destroys both; the flow ends once, when both sockets
// have closed. Counters are plain number fields on the flow: no allocation, log or event per chunk.
//
// A tunnel is one Relay object. Its listeners are module-level functions, shared by every tunnel,
// that find their tunnel through a symbol on the socket (`this` is the socket): a new tunnel
// allocates that object and nothing else for its listeners. The offload's machinery is methods,
// so a short flow, which never reaches it, pays nothing for it.
//
// Offload: once one direction has moved `offload.afterBytes`, the tunnel is handed to the native
// splice relay (src/relay-native.ts), which moves the bytes zero-copy on its own thread. The
// handoff waits, without pausing anything, for a moment when neither socket has bytes queued in
// Node (every write reached the kernel); then, in one tick, it takes the bytes Node has read but
// not delivered, gives the native relay dups of both fds, and closes the JS sockets' own fds
// (no FIN, no RST: the dups keep the connections). From then on the counters read the native
// relay's, and `onDone` comes from it, with the same reasons.
import type { Socket } from 'node:net';
import type { CloseReason } from './contracts.js';
import { keepAliveForget, keepAliveNow } from './keepalive.js';
import { DOWN_ENDED, followNative, markOffloaded, osError, socketFd, takeBuffered, UP_ENDED, type NativeRelay, type OffloadEnd } from './relay-native.js';

export interface RelayCounters {
  bytesUp: number;
  bytesDown: number;
}

export interface RelayEnd {
  /**
   * 'done' (both sides ended cleanly); else after the first error: 'client left' (any error on
   * the client's socket), 'upstream left' (the upstream reset or broke it), 'upstream error'
   * (any other upstream failure), 'reset' (the native relay saw a reset, side unknown), or the
   * reason given to stop()
   */
  readonly reason: CloseReason;
  readonly error: Error | undefined;
}

/** A peer that went away: an ordinary end, not a failure. */
const LEFT = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/** When and where to offload tunnels (read when a relay starts). */
export interface RelayOffload {
  /** hand a tunnel to the native relay once one direction has moved this many bytes (0 = never) */
  readonly afterBytes: number;
  /** the native relay; undefined where there is none */
  readonly engine: NativeRelay | undefined;
}

export interface RelayOptions<C extends RelayCounters = RelayCounters> {
  readonly offload?: RelayOffload | undefined;
  /** called once the native relay has taken the tunnel (the JS sockets are closed by then) */
  readonly onOffload?: () => void;
  /**
   * End the tunnel, reason 'idle', after this long without a byte either way (0 or absent =
   * never): the client socket's timeout in JS, the native relay's last activity once offloaded
   */
  readonly idleMs?: number;
  /**
   * Called once, just after the relay wrote the client's first bytes upstream: the flow now waits
   * for its server's answer, and the loop owes it nothing until then (the dialer makes its next
   * spare socket there). Bytes written upstream before the relay began do not count.
   */
  readonly onFirstUp?: ((counters: C) => void) | undefined;
}

export interface RelayControl {
  /** true once the native relay moves the bytes */
  readonly offloaded: boolean;
  /** offloaded: milliseconds since a byte last moved either way (else 0) */
  idleMs(): number;
  /**
   * End an offloaded tunnel now: reset both sides (a cut) or close them (idle); `onDone` then
   * reports `reason` and `error`. Before the offload this does nothing (the caller owns the sockets).
   */
  stop(reason: CloseReason, error: Error | undefined, reset: boolean): void;
}

/** Nothing queued in Node for the kernel (and a requested FIN, if any, sent). */
function flushed(s: Socket): boolean {
  return s.writableLength === 0 && (!s.writableEnded || s.writableFinished);
}

const ignore = () => {};

const DONE: RelayEnd = { reason: 'done', error: undefined };
const CLIENT_LEFT: RelayEnd = { reason: 'client left', error: undefined };
const UPSTREAM_LEFT: RelayEnd = { reason: 'upstream left', error: undefined };
const RESET: RelayEnd = { reason: 'reset', error: undefined };
const IDLE: RelayEnd = { reason: 'idle', error: undefined };

/** Where a relayed socket's listeners find their tunnel. */
const kRelay = Symbol('holdfast.relay');
type Relayed = Socket & { [kRelay]?: Relay };

// The listeners, one set for every tunnel: `this` is the socket the event came from.
function onClientData(this: Relayed, chunk: Buffer): void {
  const r = this[kRelay]!;
  const c = r.counters;
  c.bytesUp += chunk.length;
  if (!r.upstream.write(chunk)) this.pause();
  if (c.bytesUp >= r.threshold) r.maybeOffload();
  if (r.firstUp !== undefined) {
    const firstUp = r.firstUp;
    r.firstUp = undefined;
    firstUp(c);
  }
}
function onUpstreamData(this: Relayed, chunk: Buffer): void {
  const r = this[kRelay]!;
  const c = r.counters;
  c.bytesDown += chunk.length;
  if (!r.client.write(chunk)) this.pause();
  if (c.bytesDown >= r.threshold) r.maybeOffload();
}
/** The client took what was written to it: the upstream may read again. */
function onClientDrain(this: Relayed): void {
  const r = this[kRelay]!;
  r.upstream.resume();
  if (r.wantOffload) r.maybeOffload();
}
function onUpstreamDrain(this: Relayed): void {
  const r = this[kRelay]!;
  r.client.resume();
  if (r.wantOffload) r.maybeOffload();
}
function onClientError(this: Relayed, err: Error): void {
  this[kRelay]!.failed('client', err);
}
function onUpstreamError(this: Relayed, err: Error): void {
  this[kRelay]!.failed('upstream', err);
}
/** A clean end of one direction half-closes the other side. */
function onEnd(this: Relayed): void {
  this[kRelay]!.otherOf(this).end();
}
function onClose(this: Relayed): void {
  this[kRelay]!.closed(this);
}
function onFinish(this: Relayed): void {
  this[kRelay]!.maybeOffload();
}
function onTimeout(this: Relayed): void {
  this[kRelay]!.idled();
}
function handoffTick(r: Relay): void {
  r.handoff();
}
/** Offloaded: end the tunnel once the native relay has seen no byte for idleMs, else look again. */
function idleCheck(r: Relay): void {
  r.idleTimer = undefined;
  if (r.state !== 'native') return;
  const idle = r.idleMs();
  if (idle < r.idleAfterMs) r.armIdle(r.idleAfterMs - idle);
  else r.stop('idle', undefined, false);
}

/**
 * One tunnel. Its fields are read by the module-level listeners above; outside this module it
 * is only a RelayControl.
 */
class Relay implements RelayControl {
  /** bytes in one direction that trigger the offload; Infinity = never */
  threshold: number;
  state: 'js' | 'native' | 'ended' = 'js';
  wantOffload = false;
  scheduled = false;
  nativeId = -1;
  /** why the tunnel ends, when that was decided here (stop(), idle) rather than by the sockets */
  stopped: RelayEnd | undefined = undefined;
  open = 2;
  firstError: Error | undefined = undefined;
  firstErrorSide: 'client' | 'upstream' | undefined = undefined;
  readonly idleAfterMs: number;
  idleTimer: NodeJS.Timeout | undefined = undefined;
  /** opts.onFirstUp until the client's first bytes went upstream (called with `counters` only) */
  firstUp: ((counters: RelayCounters) => void) | undefined;

  constructor(
    readonly client: Socket,
    readonly upstream: Socket,
    readonly counters: RelayCounters,
    readonly onDone: (end: RelayEnd) => void,
    readonly opts: RelayOptions,
  ) {
    const off = opts.offload;
    this.threshold = off && off.engine && off.afterBytes > 0 ? off.afterBytes : Infinity;
    this.idleAfterMs = opts.idleMs ?? 0;
    this.firstUp = opts.onFirstUp;
  }

  start(): this {
    const { client, upstream } = this;
    (client as Relayed)[kRelay] = this;
    (upstream as Relayed)[kRelay] = this;
    client.on('error', onClientError);
    client.on('close', onClose); // 'close' comes once: no once() wrapper per socket
    client.on('data', onClientData);
    client.on('drain', onClientDrain);
    upstream.on('error', onUpstreamError);
    upstream.on('close', onClose);
    upstream.on('data', onUpstreamData);
    upstream.on('drain', onUpstreamDrain);
    // a side may have half-closed during the handshake, before the relay began
    if (client.readableEnded) upstream.end();
    else client.on('end', onEnd);
    if (upstream.readableEnded) client.end();
    else upstream.on('end', onEnd);
    if (this.idleAfterMs > 0) {
      // activity either way (a read from or a write to the client) resets the client's timer
      client.setTimeout(this.idleAfterMs);
      client.on('timeout', onTimeout);
    }
    client.resume();
    upstream.resume();
    return this;
  }

  otherOf(s: Socket): Socket {
    return s === this.client ? this.upstream : this.client;
  }

  finish(end: RelayEnd): void {
    if (this.state === 'ended') return;
    this.state = 'ended';
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.onDone(end);
  }

  failed(side: 'client' | 'upstream', err: Error): void {
    if (!this.firstError) {
      this.firstError = err;
      this.firstErrorSide = side;
    }
    this.client.destroy();
    this.upstream.destroy();
  }

  closed(s: Socket): void {
    if (s === this.upstream) keepAliveForget(s); // the dialer's list lets go of it now
    if (--this.open > 0) {
      // a side that closed without error before the other ended (e.g. destroyed): take the other down
      const other = this.otherOf(s);
      if (!other.destroyed && !other.writableEnded) other.destroySoon();
      return;
    }
    this.detach();
    const err = this.firstError;
    if (this.stopped) return this.finish(this.stopped);
    if (!err) return this.finish(DONE);
    // a client that leaves, even by a reset, is an ordinary end (the reason says it)
    if (this.firstErrorSide === 'client') return this.finish(CLIENT_LEFT);
    const code = (err as NodeJS.ErrnoException).code ?? '';
    this.finish(LEFT.has(code) ? UPSTREAM_LEFT : { reason: 'upstream error', error: err });
  }

  /**
   * Both sockets are closed (no event of theirs is to come), or handed to the native relay: they
   * let go of the tunnel. A closed net.Socket outlives young-generation collections for a while
   * (Node frees it with its handle), and whatever it points to would be kept, and copied, with it.
   */
  detach(): void {
    (this.client as Relayed)[kRelay] = undefined;
    (this.upstream as Relayed)[kRelay] = undefined;
  }

  /** No byte either way for idleMs, in JS: close both; the end reads 'idle'. */
  idled(): void {
    if (this.state !== 'js') return;
    this.stopped ??= IDLE;
    this.client.destroy();
    this.upstream.destroy();
  }

  armIdle(ms: number): void {
    this.idleTimer = setTimeout(idleCheck, ms, this).unref();
  }

  /** Past the threshold: hand off at the next tick in which both sockets are flushed. */
  maybeOffload(): void {
    const { client, upstream } = this;
    if (!this.wantOffload) {
      this.wantOffload = true;
      client.on('finish', onFinish);
      upstream.on('finish', onFinish);
    }
    if (this.scheduled || this.state !== 'js' || !flushed(client) || !flushed(upstream)) return;
    this.scheduled = true;
    // I/O cannot run before this tick does: what Node holds now is what the handoff takes
    process.nextTick(handoffTick, this);
  }

  handoff(): void {
    const { client, upstream, counters } = this;
    this.scheduled = false;
    if (this.state !== 'js' || client.destroyed || upstream.destroyed) return;
    if (!flushed(client) || !flushed(upstream)) return; // a drain or finish will call again
    const upEnded = client.readableEnded && upstream.writableFinished;
    const downEnded = upstream.readableEnded && client.writableFinished;
    const clientFd = socketFd(client);
    const upstreamFd = socketFd(upstream);
    if ((upEnded && downEnded) || clientFd < 0 || upstreamFd < 0) {
      this.giveUp(null, null);
      return;
    }
    client.pause();
    upstream.pause();
    const pendingUp = takeBuffered(client);
    const pendingDown = takeBuffered(upstream);
    const eng = this.opts.offload!.engine!;
    // what JS moved; the native relay counts the rest (the taken bytes included)
    let settleUp: (n: number) => void, settleDown: (n: number) => void;
    const onNativeDone = (end: OffloadEnd) => {
      markOffloaded(upstream, undefined);
      settleUp(end.bytesUp);
      settleDown(end.bytesDown);
      const why: RelayEnd =
        this.stopped ??
        (end.reason === 'done' || end.reason === 'closed'
          ? DONE
          : LEFT.has(end.reason)
            ? RESET
            : { reason: 'upstream error', error: osError(end.reason) });
      this.finish(why);
    };
    // the upstream's keepalive, if its second has not come yet: the JS socket closes below
    keepAliveNow(upstream);
    let id: number;
    try {
      const flags = (upEnded ? UP_ENDED : 0) | (downEnded ? DOWN_ENDED : 0);
      id = eng.start(clientFd, upstreamFd, pendingUp, pendingDown, flags, onNativeDone);
    } catch {
      this.giveUp(pendingUp, pendingDown);
      return;
    }
    this.nativeId = id;
    this.state = 'native';
    markOffloaded(upstream, id); // the upstream's MPTCP subflows are read through the tunnel now
    for (const s of [client, upstream]) {
      s.removeListener('data', s === client ? onClientData : onUpstreamData);
      s.removeListener('drain', s === client ? onClientDrain : onUpstreamDrain);
      s.removeListener('error', s === client ? onClientError : onUpstreamError);
      s.removeListener('end', onEnd);
      s.removeListener('finish', onFinish);
      s.removeListener('close', onClose);
      s.removeListener('timeout', onTimeout);
      s.on('error', ignore);
    }
    this.detach();
    // until the end, the counters read the native relay's (which reports after this tick)
    settleUp = followNative(counters, 'bytesUp', eng, id, 0);
    settleDown = followNative(counters, 'bytesDown', eng, id, 1);
    // close the JS sockets' own fds: the native relay's dups keep both connections up
    client.destroy();
    upstream.destroy();
    if (this.idleAfterMs > 0) this.armIdle(Math.max(1, this.idleAfterMs - this.idleMs()));
    this.opts.onOffload?.();
  }

  /** The native relay would not take it: go on in JS with what was taken, and do not try again. */
  giveUp(pendingUp: Buffer | null, pendingDown: Buffer | null): void {
    const { client, upstream, counters } = this;
    this.threshold = Infinity;
    this.wantOffload = false;
    client.removeListener('finish', onFinish);
    upstream.removeListener('finish', onFinish);
    if (pendingUp) {
      counters.bytesUp += pendingUp.length;
      upstream.write(pendingUp);
    }
    if (pendingDown) {
      counters.bytesDown += pendingDown.length;
      client.write(pendingDown);
    }
    if (!upstream.writableNeedDrain) client.resume();
    if (!client.writableNeedDrain) upstream.resume();
  }

  get offloaded(): boolean {
    return this.nativeId >= 0;
  }

  idleMs(): number {
    return this.state === 'native' ? Math.max(0, this.opts.offload!.engine!.idleMs(this.nativeId)) : 0;
  }

  stop(reason: CloseReason, error: Error | undefined, reset: boolean): void {
    if (this.state !== 'native' || this.stopped) return;
    this.stopped = reason === 'idle' && !error ? IDLE : { reason, error };
    this.opts.offload!.engine!.close(this.nativeId, reset);
  }
}

const NO_OPTIONS: RelayOptions = {};

/**
 * Relay client <-> upstream until both are closed. `onDone` is called exactly once.
 * Both sockets must have been created with allowHalfOpen: true.
 */
export function relay<C extends RelayCounters>(
  client: Socket,
  upstream: Socket,
  counters: C,
  onDone: (end: RelayEnd) => void,
  opts: RelayOptions<C> = NO_OPTIONS,
): RelayControl {
  // onFirstUp is only ever called with `counters`, which is a C
  return new Relay(client, upstream, counters, onDone, opts as RelayOptions).start();
}
