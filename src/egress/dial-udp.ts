// Pinned sockets for SOCKS5 UDP ASSOCIATE and BIND: a UDP socket that sends and receives through
// one egress, and a TCP listener that accepts only through one egress. Both are pinned as the
// dialer pins TCP flows: bound to the device (SO_BINDTODEVICE through the addon) and to the
// egress's source address, so route changes after they were made do not move them.
//
// Node adopts an fd (`dgram` bind({fd}), `net.Server` listen({fd})) but cannot bind one it
// adopted: an unbound adopted UDP socket is bound by the kernel on its first send, to the
// wildcard address, and its source address is then picked per datagram (an IPv6 temporary
// address that rotates would change it mid-association). So the addon binds the address too
// (openBound's optional 4th argument). An older addon that ignores it still pins the device.
// Without the addon: the source address only, like the TCP dialer.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import type { Egress } from '../contracts.js';
import { HoldfastError, codeOfOsError } from '../errors.js';
import type { NativeAddon } from '../native.js';
import { stripZone } from '../net/addr.js';

export interface PinnedSockets {
  /** 'device' (SO_BINDTODEVICE + source address) or 'source' (source address only). */
  readonly binder: 'device' | 'source';
  /** A UDP socket pinned to `egress`, bound to its source address on an ephemeral port. */
  udp(egress: Egress): Promise<UdpSocket>;
  /** A TCP server pinned to `egress`, listening on its source address on an ephemeral port. */
  listen(egress: Egress, onConnection: Parameters<typeof createServer>[1]): Promise<Server>;
}

function describe(what: string, egress: Egress): string {
  return `${what} via ${egress.ifname} (${egress.source})`;
}

function wrap(err: unknown, what: string, egress: Egress): HoldfastError {
  const e = err as NodeJS.ErrnoException;
  return new HoldfastError(codeOfOsError(err), `${describe(what, egress)}: ${e.code ?? e.message}`, { cause: err });
}

/** Bind `s` (a fresh dgram socket) to an address; resolves once it is bound. */
function bindUdp(s: UdpSocket, address: string): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      s.removeListener('listening', onListening);
      s.close();
      reject(err);
    };
    const onListening = () => {
      s.removeListener('error', onError);
      resolve(s);
    };
    s.once('error', onError);
    s.once('listening', onListening);
    s.bind({ address, port: 0 });
  });
}

function listenOn(server: Server, how: { fd: number } | { host: string; port: 0 }): Promise<Server> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.close();
      reject(err);
    };
    server.once('error', onError);
    try {
      server.listen({ ...how, backlog: 8 }, () => {
        server.removeListener('error', onError);
        resolve(server);
      });
    } catch (err) {
      server.removeListener('error', onError);
      reject(err);
    }
  });
}

export function createPinnedSockets(addon: NativeAddon | undefined): PinnedSockets {
  const openBound = addon ? addon.openBound.bind(addon) : undefined;
  const typeOf = (egress: Egress): 'udp4' | 'udp6' => (egress.family === 6 ? 'udp6' : 'udp4');

  const udp = async (egress: Egress): Promise<UdpSocket> => {
    const s = createSocket({ type: typeOf(egress) });
    if (!openBound || !addon) {
      try {
        return await bindUdp(s, stripZone(egress.source));
      } catch (err) {
        throw wrap(err, 'udp bind', egress);
      }
    }
    let fd: number;
    try {
      fd = openBound(egress.family, 1, egress.ifname, egress.source);
    } catch (err) {
      s.close();
      throw wrap(err, 'udp socket', egress);
    }
    try {
      // adopting an fd is synchronous: it throws (and the fd is still ours) or the socket is
      // bound and receiving when bind() returns
      s.bind({ fd });
    } catch (err) {
      addon.closeFd(fd);
      s.close();
      throw wrap(err, 'udp adopt', egress);
    }
    return s;
  };

  const listen: PinnedSockets['listen'] = async (egress, onConnection) => {
    // allowHalfOpen for the relay; pauseOnConnect: the peer's bytes wait until the relay starts
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, onConnection);
    if (!openBound || !addon) {
      try {
        return await listenOn(server, { host: stripZone(egress.source), port: 0 });
      } catch (err) {
        throw wrap(err, 'listen', egress);
      }
    }
    let fd: number;
    try {
      fd = openBound(egress.family, 0, egress.ifname, egress.source);
    } catch (err) {
      throw wrap(err, 'listen socket', egress);
    }
    try {
      return await listenOn(server, { fd });
    } catch (err) {
      // Node may or may not have closed the fd by now (it does when listen() itself failed):
      // leave it rather than risk closing a descriptor reused elsewhere
      throw wrap(err, 'listen', egress);
    }
  };

  return { binder: addon ? 'device' : 'source', udp, listen };
}

/** The address a pinned socket is bound to, or the egress's source if the kernel left it unbound. */
export function boundAddressOf(addr: { address: string; port: number }, egress: Egress): { ip: string; port: number } {
  const a = addr.address;
  const wildcard = a === '0.0.0.0' || a === '::' || a === '';
  return { ip: wildcard ? stripZone(egress.source) : a, port: addr.port };
}
