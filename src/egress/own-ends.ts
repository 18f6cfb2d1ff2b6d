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
   * destinations share a local port, so a client may well use a port one of ours uses too. The
   * client's port is looked at first: its local end (a getsockname) is read only when that port
   * is one of ours.
   */
  has(c: ConnectionEnds): boolean;
  /** how many are recorded (for tests) */
  readonly size: number;
}

function end(ip: string | undefined, port: number | undefined): string {
  return `${unmap(ip ?? '').toLowerCase()}|${port ?? 0}`;
}

/** from -> to, as the upstream socket sees it */
function pairKey(fromIp: string | undefined, fromPort: number | undefined, toIp: string | undefined, toPort: number | undefined): string {
  return `${end(fromIp, fromPort)}>${end(toIp, toPort)}`;
}

export function trackOwnEnds(inner: Dialer): OwnEnds {
  const live = new Map<string, Socket>();
  /** how many live upstream sockets use each local port */
  const ports = new Map<number, number>();
  // the far end is the target the socket was connected to (no getpeername per flow); a client's
  // remoteAddress never carries a zone, so neither does the key
  const record = (s: Socket, to: Target) => {
    const port = s.localPort;
    if (port === undefined) return;
    const key = pairKey(s.localAddress, port, stripZone(to.ip), to.port);
    live.set(key, s);
    ports.set(port, (ports.get(port) ?? 0) + 1);
    s.once('close', () => {
      if (live.get(key) === s) live.delete(key);
      const n = (ports.get(port) ?? 1) - 1;
      if (n > 0) ports.set(port, n);
      else ports.delete(port);
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
    has: (c) => {
      const port = c.remotePort;
      if (port === undefined || !ports.has(port)) return false;
      return live.has(pairKey(c.remoteAddress, port, c.localAddress, c.localPort));
    },
    get size() {
      return live.size;
    },
  };
}
