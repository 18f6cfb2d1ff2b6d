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
import { nativeRelay, offloadedTunnel } from '../relay-native.js';
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

export function describeAttempt(target: Target, egress: Egress): string {
  const host = target.family === 6 ? `[${target.ip}]` : target.ip;
  return `connect ${host}:${target.port} via ${egress.ifname} (${egress.source})`;
}

/**
 * The dialer. `opts` is read at each dial, so a reload that changes dial.timeout, dial.keepAlive
 * or mptcp in it applies to the next flow (live ones keep what they were given).
 * `onNoMptcp(why)` is called once, the first time `mptcp` is asked for and cannot be had (no MPTCP
 * in the kernel, or no addon); from then on the dialer makes plain TCP sockets.
 */
export function createDialer(
  opts: DialerOptions,
  addon: NativeAddon | undefined,
  onNoMptcp?: (why: string) => void,
): Dialer {
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
      return new Socket({ fd, allowHalfOpen: true, manualStart: true } as SocketConstructorOpts);
    } catch (err) {
      addon!.closeFd(fd);
      throw err;
    }
  };
  // With the addon, the source address is bound (port 0, picked at connect) and TCP_NODELAY and
  // keepalive are set on the new socket in the same call: one crossing into C, and none of Node's
  // own bind (its SO_REUSEADDR) nor its setNoDelay/setKeepAlive after the connect. Keepalive as
  // Node 22's libuv sets it:
  // the first probe after dial.keepAlive idle (whole seconds), then one a second, ten unanswered
  // end the connection (Node 20's own setKeepAlive leaves the kernel's 75 s x 9 after the idle).
  const keepAliveSecs = () => (opts.keepAliveMs > 0 ? Math.max(1, Math.floor(opts.keepAliveMs / 1000)) : 0);
  const makeSocket: (egress: Egress) => Socket = addon
    ? (egress) => {
        if (opts.mptcp && mptcpUsable) {
          let fd: number | undefined;
          try {
            fd = addon.openBound(egress.family, 2, egress.ifname, egress.source, keepAliveSecs());
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
        return adopt(addon.openBound(egress.family, 0, egress.ifname, egress.source, keepAliveSecs()));
      }
    : () => {
        if (opts.mptcp) noMptcp('the native addon is missing (Node alone cannot make an MPTCP socket)');
        return new Socket({ allowHalfOpen: true });
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
      const { timeoutMs, keepAliveMs } = opts;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (err: Error | undefined) => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.removeListener('error', onError);
        socket.removeListener('connect', onConnect);
        if (err) {
          socket.destroy();
          reject(err);
        } else {
          resolve(socket);
        }
      };
      const onError = (err: Error) =>
        settle(
          new HoldfastError(
            codeOfOsError(err),
            `${describeAttempt(target, egress)}: ${(err as NodeJS.ErrnoException).code ?? err.message}`,
            { cause: err },
          ),
        );
      const onConnect = () => {
        if (!addon) {
          socket.setNoDelay(true);
          if (keepAliveMs > 0) socket.setKeepAlive(true, keepAliveMs);
        }
        settle(undefined);
      };
      const onAbort = () => settle(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      // plain on(): settle() removes both, and each comes at most once before it does
      socket.on('error', onError);
      socket.on('connect', onConnect);
      timer = setTimeout(
        () => settle(new DialTimeoutError(`${describeAttempt(target, egress)}: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      socket.connect(
        addon
          ? { port: target.port, host: target.ip, family: target.family } // bound by openBound
          : { port: target.port, host: target.ip, family: target.family, localAddress: stripZone(egress.source) },
      );
    });
  }

  return { dial, binder: addon ? 'device' : 'source', subflowsOf };
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
