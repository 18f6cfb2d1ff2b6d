// The offloaded relay: a bulk tunnel leaves the JS relay (src/relay.ts) for the addon's splice
// relay (native/relay.c), which moves its bytes zero-copy on a thread of its own. Linux only; on
// other platforms, or without the addon (or with an addon built before relay.c), there is no
// engine and every tunnel stays on the JS relay.
import type { Socket } from 'node:net';
import { loadAddon } from './native.js';

interface RelayAddon {
  relayInit(onDone: (id: number, reason: string, bytesUp: number, bytesDown: number, side?: number) => void, pipeSize: number): void;
  relayStart(fdA: number, fdB: number, pendAB: Buffer | null, pendBA: Buffer | null, flags: number, limit?: number): number;
  relayClose(id: number, reset: boolean): boolean;
  relayBytes(id: number, dir: 0 | 1): number;
  relayIdleMs(id: number): number;
  relayInfo(): RelayInfo;
  relayMptcpSubflows?(id: number): Array<{ local: string; remote: string }> | null;
}

export interface RelayInfo {
  /** tunnels on the native relay now */
  readonly tunnels: number;
  /** tunnels it has taken since the process began */
  readonly started: number;
  /** the pipe size the kernel granted last (bytes) */
  readonly pipeSize: number;
  /** pages held by enlarged pipes (an unprivileged user may hold a quarter of fs.pipe-user-pages-soft) */
  readonly pipePages: number;
}

/** How an offloaded tunnel ended: 'done', 'closed' (asked by close()), or an errno name. */
export interface OffloadEnd {
  readonly reason: string;
  /** bytes the native relay wrote to upstream / to the client (JS's earlier bytes not included) */
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** the socket that failed: the client, the upstream, or unknown (no error, or an older addon) */
  readonly side: 'client' | 'upstream' | undefined;
}

/** Flags for start(): a direction that already ended (its FIN was passed on) before the handoff. */
export const UP_ENDED = 1;
export const DOWN_ENDED = 2;
/**
 * A forwarded response body (with UP_ENDED): the down direction ends after `limit` bytes, with
 * no FIN, and the client's socket is left as it was, for its owner (Node's HTTP server) to go on.
 */
export const BOUNDED = 4;

export interface NativeRelay {
  /**
   * Relay between two connected TCP sockets, given by fd: the engine dup()s them, so the caller
   * still owns (and must close) its own fds. `pendingUp` is written to upstream and
   * `pendingDown` to the client before anything else. `onDone` is called once, on the JS thread.
   * Throws (err.code: an errno name) if the tunnel cannot be taken (no fds, no pipes).
   */
  start(
    clientFd: number,
    upstreamFd: number,
    pendingUp: Buffer | null,
    pendingDown: Buffer | null,
    flags: number,
    onDone: (end: OffloadEnd) => void,
    limit?: number,
  ): number;
  /**
   * End a tunnel now: reset both sides (SO_LINGER 0) or close them. False if the id is unknown
   * (its onDone has run); a tunnel that ended but whose onDone is still queued returns true and is
   * left as it ended.
   */
  close(id: number, reset: boolean): boolean;
  /** Bytes written so far: 0 = up (to upstream), 1 = down (to the client). */
  bytes(id: number, dir: 0 | 1): number;
  /** Milliseconds since a byte last moved either way. */
  idleMs(id: number): number;
  info(): RelayInfo;
  /** The subflows of a live tunnel's upstream if it is MPTCP, else null (also once it ended). */
  mptcpSubflows(id: number): Array<{ local: string; remote: string }> | null;
}

/** Pipe size asked for each direction (F_SETPIPE_SZ; the kernel may give less). */
const PIPE_SIZE = 1 << 20;

let engine: NativeRelay | null | undefined;

/** The process's native relay, or undefined where there is none (not Linux, no addon). */
export function nativeRelay(): NativeRelay | undefined {
  if (engine !== undefined) return engine ?? undefined;
  engine = null;
  if (process.platform !== 'linux') return undefined;
  const state = loadAddon();
  if (!state.ok) return undefined;
  const a = state.addon as unknown as Partial<RelayAddon>;
  if (typeof a.relayInit !== 'function' || typeof a.relayStart !== 'function') return undefined;
  const addon = a as RelayAddon;
  const pending = new Map<number, (end: OffloadEnd) => void>();
  const envPipe = Number(process.env.HOLDFAST_RELAY_PIPE_SIZE);
  addon.relayInit(
    (id, reason, bytesUp, bytesDown, side) => {
      const fn = pending.get(id);
      pending.delete(id);
      fn?.({ reason, bytesUp, bytesDown, side: side === 0 ? 'client' : side === 1 ? 'upstream' : undefined });
    },
    Number.isInteger(envPipe) && envPipe > 0 ? envPipe : PIPE_SIZE,
  );
  engine = {
    start(clientFd, upstreamFd, pendingUp, pendingDown, flags, onDone, limit) {
      const id = addon.relayStart(clientFd, upstreamFd, pendingUp, pendingDown, flags, limit ?? 0);
      pending.set(id, onDone);
      return id;
    },
    close: (id, reset) => addon.relayClose(id, reset),
    bytes: (id, dir) => addon.relayBytes(id, dir),
    idleMs: (id) => addon.relayIdleMs(id),
    info: () => addon.relayInfo(),
    mptcpSubflows: (id) => (addon.relayMptcpSubflows ? addon.relayMptcpSubflows(id) : null),
  };
  return engine;
}

/** upstream sockets handed to the native relay, and their tunnel's id (relay.ts sets and clears) */
const offloaded = new WeakMap<Socket, number>();

/** Record (id) or forget (undefined) that `s` now lives in native tunnel `id`. */
export function markOffloaded(s: Socket, id: number | undefined): void {
  if (id === undefined) offloaded.delete(s);
  else offloaded.set(s, id);
}

/** The native tunnel an upstream socket was handed to, while that tunnel lives. */
export function offloadedTunnel(s: Socket): number | undefined {
  return offloaded.get(s);
}

/** The error of a native tunnel that ended with errno name `code` (its OffloadEnd reason). */
export function osError(code: string): Error {
  return Object.assign(new Error(`relay: ${code}`), { code, syscall: 'splice' });
}

/** Take the bytes Node has read from `s` but not delivered (the socket is paused). */
export function takeBuffered(s: Socket): Buffer | null {
  const parts: Buffer[] = [];
  for (let b: Buffer | null; (b = s.read() as Buffer | null) !== null; ) parts.push(b);
  return parts.length === 0 ? null : parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/**
 * While native tunnel `id` lives, `obj[key]` reads `base` (its value now) plus the bytes the
 * tunnel wrote in `dir`; a write adds to the base. The returned function ends that with the
 * tunnel's final count (its OffloadEnd), leaving a plain field.
 */
export function followNative<K extends string>(
  obj: Record<K, number>,
  key: K,
  eng: NativeRelay,
  id: number,
  dir: 0 | 1,
): (final: number) => void {
  let base = obj[key];
  Object.defineProperty(obj, key, {
    get: () => base + Math.max(0, eng.bytes(id, dir)),
    set: (v: number) => (base += v - obj[key]),
    configurable: true,
    enumerable: true,
  });
  return (final) => Object.defineProperty(obj, key, { value: base + final, writable: true, configurable: true, enumerable: true });
}

/** The OS fd of a connected net.Socket, or -1 (no handle, or not an fd-backed one). */
export function socketFd(s: Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/**
 * `relay.offloadAfter` as configured, unless HOLDFAST_RELAY_OFFLOAD_AFTER (bytes) overrides it:
 * a switch for running a test suite or a benchmark with every tunnel offloaded (1) or none (0).
 */
export function offloadAfterBytes(configured: number): number {
  const env = process.env.HOLDFAST_RELAY_OFFLOAD_AFTER;
  if (env === undefined || env === '') return configured;
  const n = Number(env);
  return Number.isSafeInteger(n) && n >= 0 ? n : configured;
}
