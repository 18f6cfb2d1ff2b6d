// The connector: the one call inbound handlers make to get a pinned upstream socket. It resolves
// the destination (with the DNS servers of the interface likely to carry it), races the
// addresses (Happy Eyeballs, RFC 8305: IPv6 first, IPv4 after a delay), and for each address
// races the candidate interfaces the policy gives (dialAcross). The winner feeds affinity.
// Callers that keep connections (the HTTP forwarder's per-egress pools) ask `openOrReuse`, and
// hand a pool the sockets through `pinnedConnect`, an undici-shaped `connect` hook.
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import type { CancelSignal, Destination, DialResult, Dialer, Egress, EgressPolicy, Lease, SubflowProbe, Target } from '../contracts.js';
import type { Resolver } from '../dns.js';
import { BadRequestError, HfCode, LoopError, hfCodeOf } from '../errors.js';
import { blamesPath, dialAcross, dialAlone } from './dial.js';
import { stripZone } from '../net/addr.js';
import { RaceLost, staggeredRace } from './race.js';

export interface Connector {
  /**
   * The addresses of dst in the order to try them: a name is resolved with the DNS servers of
   * the interface likely to carry it (and the next ones if those stay silent). Refuses a name
   * that points at holdfast itself (a loop).
   */
  resolve(dst: Destination): Promise<Target[]>;
  /**
   * resolve + Happy Eyeballs over the addresses + for each, a race of the policy's candidate
   * interfaces; the winner feeds affinity through its lease, which the caller hands to its flow
   * (Flow.hold) to give back when the flow ends.
   */
  open(dst: Destination, signal?: CancelSignal): Promise<Opened>;
  /**
   * For a caller that keeps connections: the first address of dst and the policy's first
   * interface for it; if `held(egress, target)` has a free connection there, that is the answer
   * (no dial). Else a new socket, raced across the policy's candidates. Affinity is not
   * fed yet: take a `lease` once the flow really began.
   */
  openOrReuse<C>(
    dst: Destination,
    signal: CancelSignal,
    held: (egress: Egress, target: Target) => C | undefined,
  ): Promise<Reused<C> | DialResult>;
  /** A flow placed by `openOrReuse` began (its upstream answered): its placement, for Flow.hold. */
  lease(dst: Destination, placed: Placed): Lease;
  /**
   * A `connect` hook for a connection pool (undici's shape) whose every socket is pinned to
   * `egress`: `first` (already dialed) the first time, later a new dial on that same egress.
   * Its `unclaimed()` destroys `first` if the pool never asked for it (true then).
   */
  pinnedConnect(egress: Egress, first?: Socket): PinnedConnect;
}

/** An upstream that `open` connected, with its placement to hold while the flow lives. */
export interface Opened extends DialResult {
  readonly lease: Lease;
}

/** Where a flow went: its address and interface. */
export type Placed = Pick<DialResult, 'egress' | 'target'>;

/** A free connection the caller already holds, on the policy's first interface. */
export interface Reused<C> extends Placed {
  readonly reused: C;
  readonly attempts: '';
}

/** undici's `connect` option: an IP address (never a name), a port, a callback. */
export interface PinnedConnect {
  (opts: { hostname: string; port: string }, cb: (...args: [null, Socket] | [Error, null]) => void): void;
  /** Destroy the first socket if it was never handed over; true if so. */
  unclaimed(): boolean;
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

/** A dial's result before `open` gives it its lease (openOrReuse's callers take theirs later). */
const NO_LEASE: Lease = { release() {} };

/**
 * What a dial connected. A class, so every flow's result has one shape and its local port is a
 * getter on the prototype: read from the kernel (a getsockname) only by a caller that needs it
 * (the SOCKS5 reply), not on every flow.
 */
class Dialed implements Opened {
  lease: Lease = NO_LEASE;
  readonly localAddress: string;
  constructor(
    readonly socket: Socket,
    readonly egress: Egress,
    readonly target: Target,
    readonly attempts: string,
    readonly subflows: SubflowProbe | undefined,
  ) {
    // the dial bound the socket to its egress's address
    this.localAddress = stripZone(egress.source);
  }

  get localPort(): number {
    return this.socket.localPort ?? 0;
  }
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

  /**
   * Resolve a name with the DNS servers of the interface that will carry it; when they fail or
   * stay silent past the fallback delay, the next interface's are asked too (and the silent
   * interface backs off, so the dial goes where the answer came from).
   */
  function resolve(dst: Destination): Promise<Target[]> {
    if (!dst.isName) return resolver.resolve(dst);
    // the full order where the policy gives it (Policy does), else its one choice
    const order = policy.resolvingInterfaces(dst);
    if (order.length === 0) return resolver.resolve(dst);
    return resolver.resolve(dst, {
      iface: order[0],
      fallbacks: order.slice(1),
      fallbackDelayMs: opts.fallbackDelayMs,
      onFailed: (iface) => policy.failed(iface.name, HfCode.DNS),
    });
  }

  // openTarget and across are plain promise chains, not async functions: a new flow's dial
  // passes through no await of its own (each would be a promise and a hop more per flow)

  /** `target` is one of resolveChecked's, which has refused a loop already. */
  function openTarget(dst: Destination, target: Target, signal: CancelSignal | undefined): Promise<Dialed> {
    return policy.candidates(target, dst).then((candidates) => across(target, candidates, signal));
  }

  /** Race `candidates` for one address (dialAcross). */
  function across(target: Target, candidates: readonly Egress[], signal: CancelSignal | undefined): Promise<Dialed> {
    return dialAcross(dialer, target, candidates, opts.fallbackDelayMs, signal, onFailed).then(
      (r) => new Dialed(r.socket, r.egress, target, r.attempts, dialer.subflowsOf?.(r.socket)),
    );
  }

  function loop(t: Target): LoopError {
    return new LoopError(`refusing to connect to ${t.ip}:${t.port}: that is holdfast itself`);
  }

  /**
   * Most flows: an address (no lookup) whose route the kernel's choice has cached (no await).
   * Straight to the dial, and the lone candidate's result is made and leased in the dial's own
   * step: one promise after the dial instead of one per layer. The same checks and outcomes as
   * the general path (the loop check, the race when there are several candidates).
   */
  function openNow(dst: Destination, target: Target, signal: CancelSignal | undefined): Promise<Dialed> {
    if (opts.refuse?.(target)) return Promise.reject(loop(target));
    let chosen: Egress[] | Promise<Egress[]>;
    try {
      chosen = policy.choose!(target, dst);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!Array.isArray(chosen)) return chosen.then((c) => dialLeased(dst, target, c, signal));
    return dialLeased(dst, target, chosen, signal);
  }

  function dialLeased(dst: Destination, target: Target, candidates: readonly Egress[], signal: CancelSignal | undefined): Promise<Dialed> {
    if (candidates.length !== 1) return across(target, candidates, signal).then((r) => leased(dst, r));
    return dialAlone(dialer, target, candidates[0], signal, onFailed, (socket, egress) =>
      leased(dst, new Dialed(socket, egress, target, '', dialer.subflowsOf?.(socket))),
    );
  }

  /**
   * The result, with its placement held for affinity until the flow gives it back. A result that
   * cannot be leased closes its socket: no caller will ever hold it.
   */
  function leased(dst: Destination, result: Dialed): Dialed {
    try {
      result.lease = policy.lease(dst, result.target, result.egress);
    } catch (err) {
      result.socket.destroy();
      throw err;
    }
    return result;
  }

  function resolveChecked(dst: Destination): Promise<Target[]> {
    let resolving: Promise<Target[]>;
    try {
      resolving = resolve(dst);
    } catch (err) {
      resolving = Promise.reject(err);
    }
    return resolving.then((all) => {
      const targets = all.slice(0, maxAddresses);
      // a name with any address that is holdfast itself is a loop, whatever its other addresses do
      const self = opts.refuse ? targets.find((t) => opts.refuse!(t)) : undefined;
      if (self) throw loop(self);
      return targets;
    });
  }

  /** Happy Eyeballs over several addresses of a name (RFC 8305). */
  async function openRace(dst: Destination, targets: readonly Target[], signal: CancelSignal | undefined): Promise<Dialed> {
    try {
      const win = await staggeredRace(targets, (t, s) => openTarget(dst, t, s), {
        delayMs: heDelayMs,
        signal,
        goOn: () => !signal?.aborted,
        dispose: (r) => r.socket.destroy(),
      });
      return win.value;
    } catch (err) {
      if (!(err instanceof RaceLost)) throw err;
      const lost = err as RaceLost<Target>;
      throw lost.failures.length ? mostTelling(lost.failures.map((f) => f.err)) : lost.last;
    }
  }

  return {
    resolve: resolveChecked,
    open(dst, signal) {
      const now = policy.choose ? resolver.resolveNow?.(dst) : undefined;
      if (now !== undefined && now.length === 1) return openNow(dst, now[0], signal);
      return resolveChecked(dst)
        .then((targets) =>
          targets.length === 1
            ? openTarget(dst, targets[0], signal)
            : openRace(dst, targets, signal),
        )
        // onto the result itself (made by across for this call only)
        .then((result) => leased(dst, result));
    },
    async openOrReuse(dst, signal, held) {
      const target = (await resolveChecked(dst))[0];
      const candidates = await policy.candidates(target, dst);
      const first = candidates[0];
      const reused = first ? held(first, target) : undefined;
      if (reused !== undefined) return { reused, egress: first, target, attempts: '' };
      return across(target, candidates, signal);
    },
    lease(dst, placed) {
      return policy.lease(dst, placed.target, placed.egress);
    },
    pinnedConnect(egress, first) {
      let ready = first;
      const hook = (o: { hostname: string; port: string }, cb: (...args: [null, Socket] | [Error, null]) => void) => {
        const ip = o.hostname; // undici gives an IPv6 literal without its brackets
        const family = isIP(ip);
        if (family === 0) {
          cb(new BadRequestError(`not an address: ${ip}`), null);
          return;
        }
        if (ready) {
          const s = ready;
          ready = undefined;
          // never call back synchronously: undici marks the client as connecting after this returns
          process.nextTick(cb, null, s);
          return;
        }
        const target: Target = { ip, family: family as 4 | 6, port: Number(o.port) || 80 };
        dialer.dial(target, egress).then(
          (s) => cb(null, s),
          (err) => {
            onFailed(egress, err);
            cb(err as Error, null);
          },
        );
      };
      return Object.assign(hook, {
        unclaimed() {
          if (!ready) return false;
          ready.destroy();
          ready = undefined;
          return true;
        },
      });
    },
  };
}
