// The connections (local end -> remote end) of holdfast's own upstream sockets, while they live. A client
// connection that arrives from one of them is holdfast talking to itself (a loop the address
// checks did not catch: a name, a port forward, a local address added later), so nesting stays
// bounded: the listener refuses it at its first byte, which can only come through the outer
// flow's relay, and so only after the dial that made it resolved and was recorded here.
import type { Socket } from 'node:net';
import type { Dialer, Target } from '../contracts.js';
import { stripZone, unmap } from '../net/addr.js';

/** A connection's two ends, read as a net.Socket gives them (its getters ask the kernel). */
export interface ConnectionEnds {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

export interface OwnEnds {
  /** the dialer, recording each socket it returns until that socket closes */
  readonly dialer: Dialer;
  /**
   * Is this connection (from its remote end to its local end) the other end of one of our live
   * upstream sockets? The whole pair is compared: Linux lets sockets connected to different
   * destinations share a local port, so a client may well use a port one of ours uses too.
   * `localPort` is the port the client connected to (the listener's, known without asking the
   * kernel): when no live upstream socket was dialed to that port, the answer is no at once, and
   * neither end is read. Only otherwise are the ends read (getsockname) and compared.
   */
  has(c: ConnectionEnds, localPort?: number): boolean;
  /** how many are recorded (for tests) */
  readonly size: number;
}

function ip(a: string | undefined): string {
  return unmap(a ?? '').toLowerCase();
}

interface Upstream {
  readonly socket: Socket;
  /** the address it was dialed to, as dialed (compared only when a client arrives on its port) */
  readonly to: string;
}

export function trackOwnEnds(inner: Dialer): OwnEnds {
  /**
   * The live upstream sockets by the port they were dialed to. The far end is the dial target (no
   * getpeername), and the local end is read only when a client arrives on that port: most flows
   * never go to a port holdfast listens on, so most never pay a getsockname for this.
   */
  const byPort = new Map<number, Set<Upstream>>();
  const record = (socket: Socket, target: Target) => {
    const u: Upstream = { socket, to: target.ip };
    let set = byPort.get(target.port);
    if (!set) byPort.set(target.port, (set = new Set()));
    set.add(u);
    socket.on('close', () => {
      const s = byPort.get(target.port);
      if (!s?.delete(u) || s.size > 0) return;
      byPort.delete(target.port);
    });
  };
  return {
    dialer: {
      binder: inner.binder,
      ...(inner.subflowsOf ? { subflowsOf: inner.subflowsOf } : {}),
      dial: (target, egress, signal) =>
        inner.dial(target, egress, signal).then((s) => {
          record(s, target);
          return s;
        }),
    },
    has: (c, localPort) => {
      const set = byPort.get(localPort ?? c.localPort ?? -1);
      if (!set) return false;
      const from = ip(c.remoteAddress);
      const fromPort = c.remotePort;
      const at = ip(c.localAddress);
      for (const u of set) {
        // a client's local address never has a zone; the upstream's local end is asked of the
        // kernel once, then kept by the socket
        if (ip(stripZone(u.to)) === at && u.socket.localPort === fromPort && ip(u.socket.localAddress) === from) return true;
      }
      return false;
    },
    get size() {
      let n = 0;
      for (const set of byPort.values()) n += set.size;
      return n;
    },
  };
}
