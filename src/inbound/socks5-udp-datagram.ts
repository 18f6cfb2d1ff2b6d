// SOCKS5 UDP ASSOCIATE: the datagram side's limits and counters, the address helpers, and the
// failure reply on the control connection (used by socks5-udp.ts and socks5-udp-association.ts).
import type { Family, Target } from '../contracts.js';
import { unmap } from '../net/addr.js';
import { toSocksReply } from '../errors.js';
import type { SocksCommandContext } from './socks5-session.js';
import { encodeReply } from './socks5.js';

/** Datagrams dropped by UDP associations, by reason (plain fields, no events). */
export interface UdpCounters {
  /** associations opened */
  associations: number;
  /** FRAG != 0 (holdfast does not reassemble) */
  frag: number;
  /** a header that does not parse */
  malformed: number;
  /** from an address or port other than the association's client */
  foreign: number;
  /** too big to send on with (or after) its header */
  oversized: number;
  /** a destination name that did not resolve */
  unresolved: number;
  /** no pinned socket for the destination's family (or no interface at all) */
  noEgress: number;
  /** waiting (for pinning or a name) when too many already were */
  queueFull: number;
  /** the kernel refused a send */
  sendFailed: number;
  /** to port 0 (no destination; Node's send would throw) */
  badPort: number;
  /** to an unspecified address (0.0.0.0, ::): this host, holdfast itself */
  loop: number;
}

export function newUdpCounters(): UdpCounters {
  return {
    associations: 0,
    frag: 0,
    malformed: 0,
    foreign: 0,
    oversized: 0,
    unresolved: 0,
    noEgress: 0,
    queueFull: 0,
    sendFailed: 0,
    badPort: 0,
    loop: 0,
  };
}

/** Largest UDP payload over IPv4 / IPv6 (without jumbograms). */
export const MAX_PAYLOAD: Record<Family, number> = { 4: 65_507, 6: 65_527 };
/** Datagrams held while the upstream socket opens or a name resolves. */
export const MAX_WAITING = 64;
/** Names resolved per association, and for how long an answer is reused. */
export const MAX_NAMES = 64;
export const NAME_TTL_MS = 30_000;

export function targetOf(ip: string, port: number, v6: boolean): Target {
  // an IPv4-mapped IPv6 destination goes out over IPv4 (a socket bound to an IPv6 source cannot reach it)
  const u = v6 ? unmap(ip) : ip;
  return { ip: u, family: u.includes(':') ? 6 : 4, port };
}

export function relayFail(c: SocksCommandContext, err: unknown): void {
  if (c.socket.destroyed) return;
  c.socket.end(encodeReply(toSocksReply(err)));
  c.socket.destroySoon();
}
