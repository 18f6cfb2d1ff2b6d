// The contracts between holdfast's parts. Type-only: imported with `import type`, so data flows
// one way (monitor -> policy -> dialer -> relay/flows) and each part can be tested with fakes.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';

export type Family = 4 | 6;

/** One address of an interface, as the kernel reports it. */
export interface IfAddress {
  readonly ip: string;
  readonly family: Family;
  readonly prefixLen: number;
}

/** A default route (0.0.0.0/0 or ::/0) in the main table, through one interface. */
export interface DefaultRoute {
  readonly family: Family;
  readonly gateway: string | null;
  readonly metric: number;
}

export interface NetInterface {
  readonly name: string;
  readonly index: number;
  /** administratively up (IFF_UP) */
  readonly up: boolean;
  /** the link has carrier (IFF_LOWER_UP); loopback always has */
  readonly carrier: boolean;
  readonly loopback: boolean;
  readonly addresses: readonly IfAddress[];
  readonly defaultRoutes: readonly DefaultRoute[];
}

/** What the host's networks look like at one moment. Frozen; replaced whole on each change. */
export interface NetSnapshot {
  readonly generation: number;
  readonly takenAt: number;
  readonly interfaces: readonly NetInterface[];
}

export interface NetDiff {
  /** interfaces that appeared, went away, or changed carrier, up or addresses */
  readonly changed: readonly string[];
  /** default routes changed (any interface) */
  readonly routes: boolean;
}

export interface NetMonitor {
  current(): NetSnapshot;
  /**
   * Called only for a real, debounced difference, always on a later tick: never inside the call
   * that made the monitor look (readNow, a new flow's placement). Returns an unsubscribe function.
   */
  onChange(fn: (prev: NetSnapshot, next: NetSnapshot, diff: NetDiff) => void): () => void;
  /**
   * Re-read the host now and return the snapshot (the policy, when the kernel names a source
   * address the snapshot does not list yet). A difference reaches onChange listeners later.
   */
  readNow(): NetSnapshot;
  /**
   * Look closely until released: re-read the host every few hundred ms besides its events (the
   * flow table holds this while it has flows, so a lost carrier is seen before Linux reports it,
   * up to 1 s late). The monitor owns the timer. Returns the release function (safe to repeat).
   */
  watchClosely(): () => void;
  /**
   * Counts what the monitor heard: every netlink event (link, address, route, rule), and every
   * change it read. A kernel route choice learned at one value holds while the value stays the
   * same (the policy's cache of those choices); absent where nothing is watched, and then
   * nothing is cached.
   */
  readonly epoch?: number;
  close(): void;
}

/** The kernel's answer to "which interface would carry a packet to ip now?" */
export type RouteChoice =
  | { readonly kind: 'route'; readonly ifname: string; readonly ifindex: number; readonly source: string }
  | { readonly kind: 'none'; readonly why: string; readonly code: string };

/**
 * Why a flow went where it did: the kernel's choice, affinity, fallback (the better ones failed or
 * were unusable), or a role or destination rule that passed over the kernel's choice.
 */
export type PlacedBy = 'route' | 'affinity' | 'fallback' | 'role' | 'rule';

/** Where a flow goes out: an interface and one of its addresses. */
export interface Egress {
  readonly ifname: string;
  readonly source: string;
  readonly family: Family;
  readonly placedBy: PlacedBy;
}

/** A resolved upstream target: never a host name. */
export interface Target {
  readonly ip: string;
  readonly family: Family;
  readonly port: number;
}

/** What the client asked for: the name (if any) and port, before resolution. */
export interface Destination {
  readonly host: string;
  readonly port: number;
  /** true when host is a name, not an address literal */
  readonly isName: boolean;
}

export interface EgressPolicy {
  /**
   * The interfaces to try for a new flow to `target`, best first (the first is the kernel's
   * choice or the affinity's). Throws a HoldfastError (HF_NO_EGRESS / HF_NET_UNREACHABLE) if none.
   */
  candidates(target: Target, dst: Destination): Promise<Egress[]>;
  /**
   * `candidates` without a promise when none is needed: the list itself when the kernel's choice
   * is cached (most flows), else the promise. Throws where `candidates` would reject. Optional:
   * a policy without it is asked through `candidates`.
   */
  choose?(target: Target, dst: Destination): Egress[] | Promise<Egress[]>;
  /**
   * The interfaces whose DNS servers may resolve `dst` (a name), best first: its affinity's, then
   * by route metric, backed-off ones last. Empty: use the system resolver.
   */
  resolvingInterfaces(dst: Destination): NetInterface[];
  /**
   * A flow connected through `egress`: its placement, held for affinity until the lease is given
   * back (then the linger starts). The flow owns the lease and gives it back once, when it ends.
   */
  lease(dst: Destination, target: Target, egress: Egress): Lease;
  /** A dial through `ifname` failed for a reason that blames the path (not ECONNREFUSED). */
  failed(ifname: string, code: string): void;
}

/** One subflow of an MPTCP connection: its local and remote addresses. */
export interface Subflow {
  readonly local: string;
  readonly remote: string;
}

/** Reads an MPTCP socket's subflows now; null once the socket is closed or fell back to TCP. */
export type SubflowProbe = () => readonly Subflow[] | null;
/** Something a flow holds while it lives (its affinity placement); `release` is safe to repeat. */
export interface Lease {
  release(): void;
}

/**
 * Why a flow ended: one vocabulary for every inbound. Only the failures (cut, dial failed,
 * timeout, upstream error, failed) carry an HF_* code; the others are ordinary ends.
 * - done: both sides finished (a forwarded response was delivered whole)
 * - client left: the client closed or reset before the end
 * - upstream left: the upstream reset or broke the connection (ECONNRESET, EPIPE)
 * - reset: a peer reset an offloaded tunnel (the native relay does not say which side)
 * - idle: no byte either way for limits.idleTimeout (udp.idleTimeout for UDP)
 * - shutdown: holdfast stopped
 * - cut: the pinned interface was lost past the grace (HF_EGRESS_LOST)
 * - dial failed: no upstream (resolution, policy, connect)
 * - timeout: a BIND's peer never came (bind.acceptTimeout)
 * - upstream error: the upstream failed otherwise mid-flow
 * - failed: anything unexpected in holdfast itself
 */
export type CloseReason =
  | 'done'
  | 'client left'
  | 'upstream left'
  | 'reset'
  | 'idle'
  | 'shutdown'
  | 'cut'
  | 'dial failed'
  | 'timeout'
  | 'upstream error'
  | 'failed';

export interface DialResult {
  readonly socket: Socket;
  readonly egress: Egress;
  readonly target: Target;
  readonly localAddress: string;
  readonly localPort: number;
  /** "wlan0 10.1.1.2: HF_DIAL_TIMEOUT; ..." for attempts that lost, empty if the first won */
  readonly attempts: string;
  /** set when the socket is an MPTCP connection (not fallen back to TCP) */
  readonly subflows?: SubflowProbe;
}

/**
 * A listener for a CancelSignal: a function, or an object whose handleEvent() is called (as
 * EventTarget allows: a dial listens with itself, no closure per dial).
 */
export type CancelListener = (() => void) | { handleEvent(): void };

/**
 * What a dial listens to for being called off: the part of AbortSignal holdfast uses. An
 * AbortSignal is one; a flow passes its cheaper Cancel (src/cancel.ts).
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: CancelListener, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: CancelListener): void;
}

export interface Dialer {
  /** Open a TCP socket pinned to `egress`, connected to `target`. */
  dial(target: Target, egress: Egress, signal?: CancelSignal): Promise<Socket>;
  /** The binder in use: 'device' (SO_BINDTODEVICE + source) or 'source' (source address only). */
  readonly binder: 'device' | 'source';
  /**
   * For a connected socket from dial(): a probe of its MPTCP subflows, or undefined if it is plain
   * TCP (MPTCP off, unavailable, or the server answered without MPTCP).
   */
  subflowsOf?(socket: Socket): SubflowProbe | undefined;
  /** Let go of what it keeps between dials (its spare sockets). Dials after this still work. */
  close?(): void;
  /**
   * The loop owes a flow placed on this interface and source nothing for a while: the flow ended
   * (the flow table says so), or it wrote its first bytes upstream and waits for its server. A
   * good moment to prepare the next dial's socket there.
   */
  spareTime?(ifname: string, source: string): void;
  /** The spare sockets it keeps now (each an fd and a local port). */
  spareSockets?(): number;
}

export type FlowKind =
  | 'socks5-connect'
  | 'socks5-udp'
  | 'socks5-bind'
  | 'http-connect'
  | 'http-forward';

/**
 * The public face of one flow, as /status shows it, in the words of the 'flow open' log line:
 * dst (host:port as the client asked), egress (the interface it is pinned to), src (its address).
 */
export interface FlowInfo {
  readonly id: number;
  readonly kind: FlowKind;
  readonly client: string;
  readonly dst: string;
  readonly ip: string | null;
  readonly egress: string | null;
  readonly src: string | null;
  readonly placedBy: PlacedBy | null;
  readonly startedAt: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** 'mptcp' for an MPTCP upstream, with its subflows' interfaces (unknown addresses as the address) */
  readonly transport?: 'mptcp';
  readonly subflows?: readonly string[];
  /** the interface the flow was pinned to before its MPTCP connection moved off it */
  readonly movedFrom?: string | null;
  /** times the HTTP forwarder resumed this download on a new connection (absent: never) */
  readonly resumed?: number;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): { cancel(): void };
}

/** What an inbound handler is given: small interfaces, so tests can pass fakes. */
export interface InboundDeps {
  readonly log: Logger;
  readonly open: (req: OpenRequest) => Promise<OpenedUpstream>;
}

export interface OpenRequest {
  readonly dst: Destination;
  readonly signal?: CancelSignal;
}

export interface OpenedUpstream extends DialResult {}
