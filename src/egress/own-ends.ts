// The connections (local end -> remote end) of holdfast's own upstream sockets, while they live. A client
// connection that arrives from one of them is holdfast talking to itself (a loop the address
// checks did not catch: a name, a port forward, a local address added later), so nesting stays
// bounded: the listener refuses it at its first byte, which can only come through the outer
// flow's relay, and so only after the dial that made it resolved and was recorded here.
import type { Socket } from 'node:net';
import type { Target } from '../contracts.js';
import { stripZone, unmap } from '../net/addr.js';

/** A connection's two ends, read as a net.Socket gives them (its getters ask the kernel). */
export interface ConnectionEnds {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

export interface OwnEnds {
  /**
   * Record an upstream socket that connected to `target`, until it closes: the dialer calls this
   * for each socket it made, before its dial resolves (createDialer's onDialed).
   */
  record(socket: Socket, target: Target): void;
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

/** What a recorded socket carries: where it was dialed, and where it is in its port's list. */
interface Recorded {
  readonly ends: PortLists;
  readonly port: number;
  /** the address it was dialed to, as dialed (compared only when a client arrives on its port) */
  readonly to: string;
  /** its index in its port's list */
  index: number;
}

const kOwn = Symbol('holdfast.ownEnd');
type Tracked = Socket & { [kOwn]?: Recorded };

/**
 * The live upstream sockets by the port they were dialed to, each port's in an array (a socket
 * leaves it by a swap with the last). A port whose list empties keeps it, until most lists are
 * empty: a Set or a Map entry made and dropped per flow would allocate a hash table each time.
 */
class PortLists {
  readonly byPort = new Map<number, Tracked[]>();
  /** ports with a live socket */
  used = 0;

  add(socket: Tracked, port: number, to: string): void {
    let list = this.byPort.get(port);
    if (!list) this.byPort.set(port, (list = []));
    if (list.length === 0) this.used++;
    socket[kOwn] = { ends: this, port, to, index: list.length };
    list.push(socket);
  }

  remove(socket: Tracked, r: Recorded): void {
    const list = this.byPort.get(r.port);
    if (!list || list[r.index] !== socket) return;
    const last = list.pop()!;
    if (last !== socket) {
      list[r.index] = last;
      last[kOwn]!.index = r.index;
    }
    if (list.length > 0) return;
    this.used--;
    if (this.byPort.size > 256 && this.used * 2 < this.byPort.size) {
      for (const [port, l] of this.byPort) if (l.length === 0) this.byPort.delete(port);
    }
  }
}

/** A recorded socket closed: forget it (module-level, it finds its record on the socket). */
function onOwnClose(this: Tracked): void {
  const r = this[kOwn];
  if (!r) return;
  this[kOwn] = undefined;
  r.ends.remove(this, r);
}

export function trackOwnEnds(): OwnEnds {
  /**
   * The far end of each is the dial target (no getpeername), and the local end is read only when
   * a client arrives on that port: most flows never go to a port holdfast listens on, so most
   * never pay a getsockname for this.
   */
  const ends = new PortLists();
  return {
    record: (socket: Tracked, target) => {
      ends.add(socket, target.port, target.ip);
      socket.on('close', onOwnClose);
    },
    has: (c, localPort) => {
      const list = ends.byPort.get(localPort ?? c.localPort ?? -1);
      if (!list || list.length === 0) return false;
      const from = ip(c.remoteAddress);
      const fromPort = c.remotePort;
      const at = ip(c.localAddress);
      for (const s of list) {
        // a client's local address never has a zone; the upstream's local end is asked of the
        // kernel once, then kept by the socket
        if (ip(stripZone(s[kOwn]!.to)) === at && s.localPort === fromPort && ip(s.localAddress) === from) return true;
      }
      return false;
    },
    get size() {
      let n = 0;
      for (const list of ends.byPort.values()) n += list.length;
      return n;
    },
  };
}
