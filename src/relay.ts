// The byte relay between a client socket and its upstream. Each direction ends alone (a clean
// end half-closes the other side); an error destroys both; the flow ends once, when both sockets
// have closed. Counters are plain number fields on the flow: no allocation, log or event per chunk.
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
import { DOWN_ENDED, markOffloaded, socketFd, UP_ENDED, type NativeRelay, type OffloadEnd } from './relay-native.js';

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

export interface RelayOptions {
  readonly offload?: RelayOffload | undefined;
  /** called once the native relay has taken the tunnel (the JS sockets are closed by then) */
  readonly onOffload?: () => void;
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

/** Take the bytes Node has read from `s` but not delivered (the socket is paused). */
function takeBuffered(s: Socket): Buffer | null {
  const parts: Buffer[] = [];
  for (let b: Buffer | null; (b = s.read() as Buffer | null) !== null; ) parts.push(b);
  return parts.length === 0 ? null : parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function osError(code: string): Error {
  return Object.assign(new Error(`relay: ${code}`), { code, syscall: 'splice' });
}

const ignore = () => {};

/**
 * Relay client <-> upstream until both are closed. `onDone` is called exactly once.
 * Both sockets must have been created with allowHalfOpen: true.
 */
export function relay(
  client: Socket,
  upstream: Socket,
  counters: RelayCounters,
  onDone: (end: RelayEnd) => void,
  opts: RelayOptions = {},
): RelayControl {
  const engine = opts.offload?.engine;
  /** bytes in one direction that trigger the offload; Infinity = never */
  let threshold = engine && opts.offload!.afterBytes > 0 ? opts.offload!.afterBytes : Infinity;
  let state: 'js' | 'native' | 'ended' = 'js';
  let wantOffload = false;
  let scheduled = false;
  let nativeId = -1;
  let stopped: { reason: CloseReason; error: Error | undefined } | undefined;
  let open = 2;
  let firstError: { err: Error; side: 'client' | 'upstream' } | undefined;

  const finish = (end: RelayEnd) => {
    if (state === 'ended') return;
    state = 'ended';
    onDone(end);
  };
  const failed = (side: 'client' | 'upstream', err: Error) => {
    firstError ??= { err, side };
    client.destroy();
    upstream.destroy();
  };
  const onClientError = (err: Error) => failed('client', err);
  const onUpstreamError = (err: Error) => failed('upstream', err);
  const onClose = () => {
    if (--open > 0) return;
    if (!firstError) return finish({ reason: 'done', error: undefined });
    const { err, side } = firstError;
    // a client that leaves, even by a reset, is an ordinary end (the reason says it)
    if (side === 'client') return finish({ reason: 'client left', error: undefined });
    const code = (err as NodeJS.ErrnoException).code ?? '';
    finish(LEFT.has(code) ? { reason: 'upstream left', error: undefined } : { reason: 'upstream error', error: err });
  };
  // A 'data' handler forwards with backpressure and counts into the counters.
  const upData = (chunk: Buffer) => {
    counters.bytesUp += chunk.length;
    if (!upstream.write(chunk)) client.pause();
    if (counters.bytesUp >= threshold) maybeOffload();
  };
  const downData = (chunk: Buffer) => {
    counters.bytesDown += chunk.length;
    if (!client.write(chunk)) upstream.pause();
    if (counters.bytesDown >= threshold) maybeOffload();
  };
  const upDrain = () => {
    client.resume();
    if (wantOffload) maybeOffload();
  };
  const downDrain = () => {
    upstream.resume();
    if (wantOffload) maybeOffload();
  };
  const upEnd = () => upstream.end();
  const downEnd = () => client.end();
  const onFinish = () => maybeOffload();
  // a side that closed without error before the other ended (e.g. destroyed): take the other down
  const clientGone = () => {
    if (!upstream.destroyed && !upstream.writableEnded) upstream.destroySoon();
  };
  const upstreamGone = () => {
    if (!client.destroyed && !client.writableEnded) client.destroySoon();
  };

  /** Past the threshold: hand off at the next tick in which both sockets are flushed. */
  const maybeOffload = () => {
    if (!wantOffload) {
      wantOffload = true;
      client.on('finish', onFinish);
      upstream.on('finish', onFinish);
    }
    if (scheduled || state !== 'js' || !flushed(client) || !flushed(upstream)) return;
    scheduled = true;
    // I/O cannot run before this tick does: what Node holds now is what the handoff takes
    process.nextTick(handoff);
  };

  const handoff = () => {
    scheduled = false;
    if (state !== 'js' || client.destroyed || upstream.destroyed) return;
    if (!flushed(client) || !flushed(upstream)) return; // a drain or finish will call again
    const upEnded = client.readableEnded && upstream.writableFinished;
    const downEnded = upstream.readableEnded && client.writableFinished;
    const clientFd = socketFd(client);
    const upstreamFd = socketFd(upstream);
    if ((upEnded && downEnded) || clientFd < 0 || upstreamFd < 0) {
      giveUp(null, null);
      return;
    }
    client.pause();
    upstream.pause();
    const pendingUp = takeBuffered(client);
    const pendingDown = takeBuffered(upstream);
    const eng = engine!;
    // what JS moved; the native relay counts the rest (the taken bytes included)
    let baseUp = counters.bytesUp;
    let baseDown = counters.bytesDown;
    const onNativeDone = (end: OffloadEnd) => {
      markOffloaded(upstream, undefined);
      Object.defineProperty(counters, 'bytesUp', { value: baseUp + end.bytesUp, writable: true, configurable: true, enumerable: true });
      Object.defineProperty(counters, 'bytesDown', { value: baseDown + end.bytesDown, writable: true, configurable: true, enumerable: true });
      const why: RelayEnd = stopped ??
        (end.reason === 'done' || end.reason === 'closed'
          ? { reason: 'done', error: undefined }
          : LEFT.has(end.reason)
            ? { reason: 'reset', error: undefined }
            : { reason: 'upstream error', error: osError(end.reason) });
      finish(why);
    };
    let id: number;
    try {
      const flags = (upEnded ? UP_ENDED : 0) | (downEnded ? DOWN_ENDED : 0);
      id = eng.start(clientFd, upstreamFd, pendingUp, pendingDown, flags, onNativeDone);
    } catch {
      giveUp(pendingUp, pendingDown);
      return;
    }
    nativeId = id;
    state = 'native';
    markOffloaded(upstream, id); // the upstream's MPTCP subflows are read through the tunnel now
    for (const { s, data, drain, end, gone, onError } of sides) {
      s.removeListener('data', data);
      s.removeListener('drain', drain);
      s.removeListener('end', end);
      s.removeListener('finish', onFinish);
      s.removeListener('error', onError);
      s.removeListener('close', onClose);
      s.removeListener('close', gone);
      s.on('error', ignore);
    }
    // until the end, the counters read the native relay's (which reports after this tick)
    Object.defineProperty(counters, 'bytesUp', {
      get: () => baseUp + Math.max(0, eng.bytes(id, 0)),
      set: (v: number) => (baseUp += v - counters.bytesUp),
      configurable: true,
      enumerable: true,
    });
    Object.defineProperty(counters, 'bytesDown', {
      get: () => baseDown + Math.max(0, eng.bytes(id, 1)),
      set: (v: number) => (baseDown += v - counters.bytesDown),
      configurable: true,
      enumerable: true,
    });
    // close the JS sockets' own fds: the native relay's dups keep both connections up
    client.destroy();
    upstream.destroy();
    opts.onOffload?.();
  };

  /** The native relay would not take it: go on in JS with what was taken, and do not try again. */
  const giveUp = (pendingUp: Buffer | null, pendingDown: Buffer | null) => {
    threshold = Infinity;
    wantOffload = false;
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
  };

  /** Each socket with the handlers that read it (attached here, detached at the native handoff). */
  const sides = [
    { s: client, other: upstream, data: upData, drain: downDrain, end: upEnd, gone: clientGone, onError: onClientError },
    { s: upstream, other: client, data: downData, drain: upDrain, end: downEnd, gone: upstreamGone, onError: onUpstreamError },
  ] as const;
  for (const { s, data, drain, onError } of sides) {
    s.on('error', onError);
    s.on('close', onClose); // 'close' comes once: no once() wrapper per socket
    s.on('data', data);
    s.on('drain', drain);
  }
  for (const { s, other, end, gone } of sides) {
    // a side may have half-closed during the handshake, before the relay began
    if (s.readableEnded) other.end();
    else s.on('end', end);
    s.on('close', gone);
  }
  client.resume();
  upstream.resume();

  return {
    get offloaded() {
      return nativeId >= 0;
    },
    idleMs: () => (state === 'native' ? Math.max(0, engine!.idleMs(nativeId)) : 0),
    stop(reason, error, reset) {
      if (state !== 'native' || stopped) return;
      stopped = { reason, error };
      engine!.close(nativeId, reset);
    },
  };
}
