// The connections (local end -> remote end) of holdfast's own upstream sockets, while they live. A client
// connection that arrives from one of them is holdfast talking to itself (a loop the address
// checks did not catch: a name, a port forward, a local address added later), so nesting stays
// bounded: the listener refuses it at its first byte, which can only come through the outer
// flow's relay, and so only after the dial that made it resolved and was recorded here.
import type { Socket } from 'node:net';
import type { Dialer, Target } from '../contracts.js';
import { stripZone, unmap } from '../net/addr.js';

export interface OwnEnds {
  /** the dialer, recording each socket it returns until that socket closes */
  readonly dialer: Dialer;
  /**
   * Is a connection from ip:port to localIp:localPort the other end of one of our live upstream
   * sockets? The whole pair is compared: Linux lets sockets connected to different destinations
   * share a local port, so a client may well use a port one of ours uses too.
   */
  has(ip: string | undefined, port: number | undefined, localIp: string | undefined, localPort: number | undefined): boolean;
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
  // the far end is the target the socket was connected to (no getpeername per flow); a client's
  // remoteAddress never carries a zone, so neither does the key
  const record = (s: Socket, to: Target) => {
    if (s.localPort === undefined) return;
    const key = pairKey(s.localAddress, s.localPort, stripZone(to.ip), to.port);
    live.set(key, s);
    s.once('close', () => {
      if (live.get(key) === s) live.delete(key);
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
    has: (ip, port, localIp, localPort) => live.has(pairKey(ip, port, localIp, localPort)),
    get size() {
      return live.size;
    },
  };
}
