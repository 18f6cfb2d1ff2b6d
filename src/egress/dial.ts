// The dialer: open a TCP socket pinned to an egress (device + source address) and connect it to
// an IP address (never a name). Everything that can be decided once is decided in createDialer;
// dial() only runs. dialAcross() races candidates with staggered starts (DESIGN rule 6).
import { Socket, type SocketConstructorOpts } from 'node:net';
import type { Dialer, Egress, Target } from '../contracts.js';
import {
  DialTimeoutError,
  EgressUnreachableError,
  HfCode,
  HoldfastError,
  codeOfOsError,
  hfCodeOf,
} from '../errors.js';
import type { NativeAddon } from '../native.js';

export interface DialerOptions {
  readonly timeoutMs: number;
  readonly keepAliveMs: number;
}

function stripZone(ip: string): string {
  const i = ip.indexOf('%');
  return i < 0 ? ip : ip.slice(0, i);
}

export function describeAttempt(target: Target, egress: Egress): string {
  const host = target.family === 6 ? `[${target.ip}]` : target.ip;
  return `connect ${host}:${target.port} via ${egress.ifname} (${egress.source})`;
}

export function createDialer(opts: DialerOptions, addon: NativeAddon | undefined): Dialer {
  const { timeoutMs, keepAliveMs } = opts;

  // The binder is chosen once. 'device': the addon makes a socket bound to the interface, and
  // net.Socket adopts it (manualStart: do not start reading an unconnected socket).
  const makeSocket: (egress: Egress) => Socket = addon
    ? (egress) => {
        const fd = addon.openBound(egress.family, 0, egress.ifname);
        try {
          return new Socket({ fd, allowHalfOpen: true, manualStart: true } as SocketConstructorOpts);
        } catch (err) {
          addon.closeFd(fd);
          throw err;
        }
      }
    : () => new Socket({ allowHalfOpen: true });

  function dial(target: Target, egress: Egress, signal?: AbortSignal): Promise<Socket> {
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
        socket.setNoDelay(true);
        if (keepAliveMs > 0) socket.setKeepAlive(true, keepAliveMs);
        settle(undefined);
      };
      const onAbort = () => settle(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('error', onError);
      socket.once('connect', onConnect);
      timer = setTimeout(
        () => settle(new DialTimeoutError(`${describeAttempt(target, egress)}: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      socket.connect({
        port: target.port,
        host: target.ip,
        family: target.family,
        localAddress: stripZone(egress.source),
      });
    });
  }

  return { dial, binder: addon ? 'device' : 'source' };
}

/** A failure that blames the path, so another interface is worth a try. */
export function blamesPath(err: unknown): boolean {
  const code = hfCodeOf(err);
  return (
    code === HfCode.NET_UNREACHABLE || code === HfCode.HOST_UNREACHABLE || code === HfCode.DIAL_TIMEOUT
  );
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
 * winners are destroyed. ECONNREFUSED ends the race: the server answered.
 */
export function dialAcross(
  dialer: Dialer,
  target: Target,
  candidates: readonly Egress[],
  fallbackDelayMs: number,
  signal?: AbortSignal,
  onFailed?: (egress: Egress, err: unknown) => void,
): Promise<AcrossResult> {
  if (candidates.length === 0) {
    return Promise.reject(new EgressUnreachableError(HfCode.NO_EGRESS, `no interface to try for ${target.ip}`, ''));
  }
  if (candidates.length === 1) {
    return dialer.dial(target, candidates[0], signal).then(
      (socket) => ({ socket, egress: candidates[0], attempts: '' }),
      (err) => {
        onFailed?.(candidates[0], err);
        throw err;
      },
    );
  }
  return new Promise<AcrossResult>((resolve, reject) => {
    const attempts: { egress: Egress; ac: AbortController; settled: boolean }[] = [];
    const failures: string[] = [];
    let next = 0;
    let pending = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    let lastErr: unknown;

    const finish = (result: AcrossResult | undefined, err?: unknown) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      for (const a of attempts) {
        if (a.settled) continue;
        // an attempt that started before the winner and is still silent has stalled: say so,
        // so the policy backs off that interface
        if (result) onFailed?.(a.egress, new DialTimeoutError(`${describeAttempt(target, a.egress)}: lost to ${result.egress.ifname}`));
        a.ac.abort(new Error('lost the race'));
      }
      if (result) resolve(result);
      else {
        const attempts = failures.join('; ');
        const code = hfCodeOf(err);
        reject(
          new EgressUnreachableError(
            code,
            `${describeAttempt(target, candidates[0])} and ${candidates.length - 1} fallback(s) failed: ${attempts}`,
            attempts,
            err,
          ),
        );
      }
    };
    const onAbort = () => finish(undefined, signal?.reason ?? new Error('aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });

    const start = () => {
      if (done || next >= candidates.length) return;
      const egress = candidates[next++];
      const ac = new AbortController();
      const attempt = { egress, ac, settled: false };
      attempts.push(attempt);
      pending++;
      if (timer) clearTimeout(timer);
      if (next < candidates.length) timer = setTimeout(start, fallbackDelayMs);
      dialer.dial(target, egress, ac.signal).then(
        (socket) => {
          pending--;
          attempt.settled = true;
          if (done) {
            socket.destroy();
            return;
          }
          finish({ socket, egress, attempts: failures.join('; ') });
        },
        (err) => {
          pending--;
          attempt.settled = true;
          if (done) return;
          lastErr = err;
          failures.push(`${egress.ifname} ${egress.source}: ${hfCodeOf(err)}`);
          onFailed?.(egress, err);
          if (!blamesPath(err)) {
            finish(undefined, err);
            return;
          }
          if (next < candidates.length) start();
          else if (pending === 0) finish(undefined, lastErr);
        },
      );
    };
    if (signal?.aborted) onAbort();
    else start();
  });
}
