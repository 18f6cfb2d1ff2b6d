// What an inbound handler is given. Small interfaces, so tests can pass fakes.
import type { Logger } from 'pino';
import type { Authenticator } from '../auth.js';
import type { EgressPolicy } from '../contracts.js';
import type { Connector } from '../egress/connector.js';
import type { ConnectionEnds } from '../egress/own-ends.js';
import type { PinnedSockets } from '../egress/dial-udp.js';
import type { Flow, FlowTable } from '../flows.js';
import type { RelayOffload } from '../relay.js';
import type { FdExhaustion } from './fd-exhaustion.js';
import type { BindCounters } from './socks5-bind.js';
import type { UdpCounters } from './socks5-udp.js';

/** What SOCKS5 UDP ASSOCIATE and BIND need besides the connector (built in app.ts). */
export interface Socks5Extras {
  readonly policy: EgressPolicy;
  /** pinned UDP sockets and TCP listeners */
  readonly pinned: PinnedSockets;
  /** an association without a datagram either way for this long ends (0 = never) */
  readonly udpIdleTimeoutMs: number;
  /** a BIND whose peer has not connected in this time gets reply 0x06 (0 = wait for ever) */
  readonly bindAcceptTimeoutMs: number;
  readonly udpCounters: UdpCounters;
  readonly bindCounters: BindCounters;
}

/** Refusals and protocol errors at the door, for /status and /metrics. Plain fields, no events. */
export interface InboundCounters {
  clientsRefused: number;
  authFailures: number;
  badHandshakes: number;
  handshakeTimeouts: number;
  /** HTTP request heads over limits.maxHeaderBytes (answered 431) */
  headersTooLarge: number;
  limitRefusals: number;
  idleTimeouts: number;
  /** requests to holdfast itself (its listeners, 0.0.0.0, ::) and connections from its own dialer: loops */
  loopRefusals: number;
  /** accepts or dials that failed for want of file descriptors (EMFILE, ENFILE) */
  fdExhausted: number;
}

export function newInboundCounters(): InboundCounters {
  return {
    clientsRefused: 0,
    authFailures: 0,
    badHandshakes: 0,
    handshakeTimeouts: 0,
    headersTooLarge: 0,
    limitRefusals: 0,
    idleTimeouts: 0,
    loopRefusals: 0,
    fdExhausted: 0,
  };
}

/** The HTTP forwarder's resumed downloads, for /status and /metrics. */
export interface ForwardCounters {
  /** downloads continued on a new connection by a Range request after their upstream died */
  resumes: number;
  /** resumes tried that did not splice (no 206 with the same range and validator, a dial failure): the client was cut */
  resumeFailures: number;
}

/** The HTTP forwarder's settings (read per request: a reload applies to new requests). */
export interface ForwardSettings {
  /** Range requests per response after its upstream dies mid-body (0 = cut as before) */
  resumeAttempts: number;
  readonly counters: ForwardCounters;
}

/**
 * What an inbound handler is given. The settings fields are read when a connection arrives, so a
 * reload (SIGHUP) that replaces them applies to new connections and leaves live flows alone.
 */
export interface InboundContext {
  readonly log: Logger;
  readonly connector: Connector;
  readonly flows: FlowTable;
  /** the whole handshake (SOCKS greeting + request, or HTTP request head) must arrive in this time */
  readonly handshakeTimeoutMs: number;
  readonly auth: Authenticator;
  /** close a tunnel after this long without a byte either way (0 = never) */
  readonly idleTimeoutMs: number;
  /** when to hand bulk tunnels to the native relay (absent: never) */
  readonly relay?: RelayOffload;
  readonly counters: InboundCounters;
  /** may this client address use the proxy? */
  allowClient(ip: string): boolean;
  /** count (and log once per burst) an accept or dial that failed for want of file descriptors */
  readonly fdExhausted?: FdExhaustion;
  /**
   * is this client connection the other end of one of holdfast's own upstream sockets (a loop)?
   * `localPort`: the listener's port, when known (saves reading the client's local end)
   */
  readonly isOwnDial?: (client: ConnectionEnds, localPort?: number) => boolean;
  /**
   * A tunnel wrote its first bytes upstream and now waits for its server: a moment the loop owes
   * it nothing (the dialer makes its next spare socket for that egress there). Absent without spares.
   */
  readonly waiting?: (flow: Flow) => void;
  /** the HTTP forwarder's resume settings; without it, a download whose upstream dies is cut */
  readonly forward?: ForwardSettings;
  /** UDP ASSOCIATE and BIND; without it both answer 0x07 (command not supported) */
  readonly socks5?: Socks5Extras;
}

/** "ip:port" of a socket's peer, for logs and /status. */
export function peerOf(s: { remoteAddress?: string; remotePort?: number }): string {
  const a = s.remoteAddress ?? '?';
  return a.includes(':') ? `[${a}]:${s.remotePort ?? 0}` : `${a}:${s.remotePort ?? 0}`;
}
