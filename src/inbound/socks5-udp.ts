// SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): a UDP relay for one client, pinned like a TCP flow.
//
// The reply names a relay socket on the address the client reached holdfast at (the control
// connection's local address). Datagrams from the client carry the RFC 1928 UDP header; their
// payloads go out through ONE upstream UDP socket per address family, pinned (device + source
// address) to the interface chosen for the association's first datagram: the policy's first
// candidate for that datagram's destination (the kernel's choice, or affinity's). DST.ADDR of
// the request is not used for this: RFC 1928 makes it the address the *client* will send from,
// not a destination. Later datagrams, to any destination, keep that interface; a datagram of the
// other family goes out through a second socket on the same interface if the policy finds it
// usable for that family, else it is dropped (counted as noEgress). Replies from any source come
// back to the client with the header naming that source (IP address ATYP).
//
// Only the client that asked may use the relay: its IP (the control connection's peer), and its
// port: DST.PORT if the request gave one, else the source port of its first valid datagram.
// Anything else (foreign sources, malformed headers, FRAG != 0, oversized payloads) is dropped and
// counted, never answered. The association ends when its control connection ends, after
// `udp.idleTimeout` without a datagram either way, or when it is cut (FlowTable: interface lost).
import { HfCode, HoldfastError } from '../errors.js';
import type { Flow } from '../flows.js';
import type { SocksCommandContext } from './socks5-session.js';
import { Association } from './socks5-udp-association.js';
import { relayFail } from './socks5-udp-datagram.js';

export { newUdpCounters, type UdpCounters } from './socks5-udp-datagram.js';

export function handleUdpAssociate(c: SocksCommandContext): void {
  const x = c.ctx.socks5;
  if (!x) {
    relayFail(c, new HoldfastError(HfCode.CMD_UNSUPPORTED, 'UDP ASSOCIATE is not configured'));
    return;
  }
  let flow: Flow;
  try {
    flow = c.ctx.flows.open('socks5-udp', c.client, c.dst);
  } catch (err) {
    c.ctx.counters.limitRefusals++;
    relayFail(c, err);
    return;
  }
  x.udpCounters.associations++;
  flow.datagramsUp = 0;
  flow.datagramsDown = 0;
  new Association(c, x, flow).start();
}
