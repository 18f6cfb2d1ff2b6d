// The connector: the one call inbound handlers make to get a pinned upstream socket. It resolves
// the destination (with the DNS servers of the interface likely to carry it), races the
// addresses (Happy Eyeballs, RFC 8305: IPv6 first, IPv4 after a delay), and for each address
// races the candidate interfaces the policy gives (dialAcross). The winner feeds affinity.
import type { Destination, DialResult, Dialer, EgressPolicy, Target } from '../contracts.js';
import type { Resolver } from '../dns.js';
import { HfCode, NotAllowedError, hfCodeOf } from '../errors.js';
import { blamesPath, dialAcross } from './dial.js';
import { RaceLost, staggeredRace } from './race.js';

export interface Connector {
  open(dst: Destination, signal?: AbortSignal): Promise<DialResult>;
  /** The flow that `open` returned has ended. */
  release(dst: Destination, result: DialResult): void;
}

export interface ConnectorOptions {
  /** wait this long for an interface before trying the next (fallback.delay) */
  readonly fallbackDelayMs: number;
  /** wait this long for one address family before trying the other (RFC 8305: 250 ms) */
  readonly happyEyeballsDelayMs?: number;
  /** at most this many addresses of a name are tried */
  readonly maxAddresses?: number;
  /** targets that must not be dialed (holdfast's own listeners: a loop) */
  readonly refuse?: (target: Target) => boolean;
}

/** Of several failures, the one to report: a server's answer beats "no route" on some family. */
function mostTelling(errors: readonly unknown[]): unknown {
  return errors.find((e) => hfCodeOf(e) !== HfCode.NET_UNREACHABLE) ?? errors[errors.length - 1];
}

export function createConnector(
  resolver: Resolver,
  policy: EgressPolicy,
  dialer: Dialer,
  opts: ConnectorOptions,
): Connector {
  // opts is read per flow: a reload may change fallbackDelayMs
  const heDelayMs = opts.happyEyeballsDelayMs ?? 250;
  const maxAddresses = opts.maxAddresses ?? 4;
  const onFailed = (egress: { ifname: string }, err: unknown) => {
    if (blamesPath(err)) policy.failed(egress.ifname, hfCodeOf(err));
  };

  async function openTarget(dst: Destination, target: Target, signal: AbortSignal): Promise<DialResult> {
    if (opts.refuse?.(target)) {
      throw new NotAllowedError(`refusing to connect to ${target.ip}:${target.port}: that is holdfast itself`);
    }
    const candidates = await policy.candidates(target, dst);
    const r = await dialAcross(dialer, target, candidates, opts.fallbackDelayMs, signal, onFailed);
    return {
      socket: r.socket,
      egress: r.egress,
      target,
      localAddress: r.socket.localAddress ?? r.egress.source,
      localPort: r.socket.localPort ?? 0,
      attempts: r.attempts,
    };
  }

  return {
    async open(dst, signal) {
      const via = dst.isName ? policy.resolvingInterface(dst) : undefined;
      const targets = (await resolver.resolve(dst, via ? { iface: via } : undefined)).slice(0, maxAddresses);
      let result: DialResult;
      if (targets.length === 1) {
        result = await openTarget(dst, targets[0], signal ?? new AbortController().signal);
      } else {
        try {
          const win = await staggeredRace(targets, (t, s) => openTarget(dst, t, s), {
            delayMs: heDelayMs,
            signal,
            goOn: () => !signal?.aborted,
            dispose: (r) => r.socket.destroy(),
          });
          result = win.value;
        } catch (err) {
          if (!(err instanceof RaceLost)) throw err;
          const lost = err as RaceLost<Target>;
          throw lost.failures.length ? mostTelling(lost.failures.map((f) => f.err)) : lost.last;
        }
      }
      policy.connected(dst, result.target, result.egress);
      return result;
    },
    release(dst, result) {
      policy.released(dst, result.target, result.egress);
    },
  };
}
