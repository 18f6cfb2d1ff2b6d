// What an inbound handler is given. Small interfaces, so tests can pass fakes.
import type { Logger } from 'pino';
import type { Connector } from '../egress/connector.js';
import type { FlowTable } from '../flows.js';

export interface InboundContext {
  readonly log: Logger;
  readonly connector: Connector;
  readonly flows: FlowTable;
  /** the whole handshake (SOCKS greeting + request, or HTTP request head) must arrive in this time */
  readonly handshakeTimeoutMs: number;
}

/** "ip:port" of a socket's peer, for logs and /status. */
export function peerOf(s: { remoteAddress?: string; remotePort?: number }): string {
  const a = s.remoteAddress ?? '?';
  return a.includes(':') ? `[${a}]:${s.remotePort ?? 0}` : `${a}:${s.remotePort ?? 0}`;
}
