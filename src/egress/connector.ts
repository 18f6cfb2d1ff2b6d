// The connector: the one call inbound handlers make to get a pinned upstream socket. It resolves
// the destination, asks the policy for candidate egresses, races them, and feeds affinity.
import type { Destination, DialResult, Dialer, EgressPolicy, Target } from '../contracts.js';
import type { Resolver } from '../dns.js';
import { hfCodeOf } from '../errors.js';
import { blamesPath, dialAcross } from './dial.js';

export interface Connector {
  open(dst: Destination, signal?: AbortSignal): Promise<DialResult>;
  /** The flow that `open` returned has ended. */
  release(dst: Destination, result: DialResult): void;
}

export function createConnector(
  resolver: Resolver,
  policy: EgressPolicy,
  dialer: Dialer,
  fallbackDelayMs: number,
): Connector {
  const onFailed = (egress: { ifname: string }, err: unknown) => {
    if (blamesPath(err)) policy.failed(egress.ifname, hfCodeOf(err));
  };
  return {
    async open(dst, signal) {
      const targets = await resolver.resolve(dst);
      let lastErr: unknown;
      for (const target of targets.slice(0, 2) as Target[]) {
        try {
          const candidates = await policy.candidates(target, dst);
          const r = await dialAcross(dialer, target, candidates, fallbackDelayMs, signal, onFailed);
          policy.connected(dst, target, r.egress);
          return {
            socket: r.socket,
            egress: r.egress,
            target,
            localAddress: r.socket.localAddress ?? r.egress.source,
            localPort: r.socket.localPort ?? 0,
            attempts: r.attempts,
          };
        } catch (err) {
          lastErr = err;
          if (!blamesPath(err) || signal?.aborted) break;
        }
      }
      throw lastErr;
    },
    release(dst, result) {
      policy.released(dst, result.target, result.egress);
    },
  };
}
