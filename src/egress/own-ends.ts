// The local ends (address:port) of holdfast's own upstream sockets, while they live. A client
// connection that arrives from one of them is holdfast talking to itself (a loop the address
// checks did not catch: a name, a port forward, a local address added later), so nesting stays
// bounded: the listener refuses it at its first byte, which can only come through the outer
// flow's relay, and so only after the dial that made it resolved and was recorded here.
import type { Socket } from 'node:net';
import type { Dialer } from '../contracts.js';

export interface OwnEnds {
  /** the dialer, recording each socket it returns until that socket closes */
  readonly dialer: Dialer;
  /** Is ip:port the local end of one of our live upstream sockets? */
  has(ip: string | undefined, port: number | undefined): boolean;
  /** how many are recorded (for tests) */
  readonly size: number;
}

function endKey(ip: string | undefined, port: number | undefined): string {
  const a = ip ?? '';
  const u = a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
  return `${u.toLowerCase()}|${port ?? 0}`;
}

export function trackOwnEnds(inner: Dialer): OwnEnds {
  const live = new Map<string, Socket>();
  const record = (s: Socket) => {
    if (s.localPort === undefined) return;
    const key = endKey(s.localAddress, s.localPort);
    live.set(key, s);
    s.once('close', () => {
      if (live.get(key) === s) live.delete(key);
    });
  };
  return {
    dialer: {
      binder: inner.binder,
      dial: (target, egress, signal) =>
        inner.dial(target, egress, signal).then((s) => {
          record(s);
          return s;
        }),
    },
    has: (ip, port) => live.has(endKey(ip, port)),
    get size() {
      return live.size;
    },
  };
}
