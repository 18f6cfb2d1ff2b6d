// What an inbound handler is given. Small interfaces, so tests can pass fakes.
import type { Logger } from 'pino';
import type { Authenticator } from '../auth.js';
import type { Connector } from '../egress/connector.js';
import type { FlowTable } from '../flows.js';

/** Refusals and protocol errors at the door, for /status and /metrics. Plain fields, no events. */
export interface InboundCounters {
  clientsRefused: number;
  authFailures: number;
  badHandshakes: number;
  handshakeTimeouts: number;
  limitRefusals: number;
  idleTimeouts: number;
}

export function newInboundCounters(): InboundCounters {
  return { clientsRefused: 0, authFailures: 0, badHandshakes: 0, handshakeTimeouts: 0, limitRefusals: 0, idleTimeouts: 0 };
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
  readonly counters: InboundCounters;
  /** may this client address use the proxy? */
  allowClient(ip: string): boolean;
}

/** "ip:port" of a socket's peer, for logs and /status. */
export function peerOf(s: { remoteAddress?: string; remotePort?: number }): string {
  const a = s.remoteAddress ?? '?';
  return a.includes(':') ? `[${a}]:${s.remotePort ?? 0}` : `${a}:${s.remotePort ?? 0}`;
}
