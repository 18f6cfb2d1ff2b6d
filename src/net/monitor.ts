// The network monitor: what interfaces, addresses, carrier and default routes the host has, as
// frozen snapshots, and a change event for real (debounced) differences. It knows nothing of
// flows. The platform part reads the state; this part compares and announces.
import type { NetDiff, NetInterface, NetMonitor, NetSnapshot } from '../contracts.js';
import { createLinuxReader, watchLinux } from './monitor-linux.js';

export interface StateReader {
  /** Read the interfaces now (synchronous: a few file reads). */
  read(): NetInterface[];
  /**
   * The close watch's cheap look: could an interface of `snap` have gone down, lost its carrier
   * or gone away? true = re-read everything. A reader without it is re-read on every probe.
   */
  linksChanged?(snap: NetSnapshot): boolean;
  /** Let go of what linksChanged keeps open. */
  close?(): void;
}

export interface MonitorOptions {
  /** Re-read this often even without events (safety net). */
  pollMs?: number;
  /** Wait this long after an event before re-reading, to coalesce bursts. */
  debounceMs?: number;
  reader?: StateReader;
  /** Start a platform watcher (ip monitor); tests with a fake reader pass false. */
  watch?: boolean;
  /**
   * Re-read this often while someone watches closely (watchClosely). Linux sends its netlink
   * report of a carrier change from the linkwatch work, which runs ordinary links' events at most
   * once a second, so the report can come up to 1 s after the loss, while the kernel's state
   * shows it at once. Default 250 ms; 0 = never.
   */
  probeMs?: number;
}

type ChangeFn = (prev: NetSnapshot, next: NetSnapshot, diff: NetDiff) => void;

function sameInterface(a: NetInterface, b: NetInterface): boolean {
  if (a.index !== b.index || a.up !== b.up || a.carrier !== b.carrier) return false;
  if (a.addresses.length !== b.addresses.length) return false;
  for (let i = 0; i < a.addresses.length; i++) {
    const x = a.addresses[i];
    const y = b.addresses[i];
    if (x.ip !== y.ip || x.prefixLen !== y.prefixLen) return false;
  }
  return true;
}

function sameRoutes(a: NetInterface, b: NetInterface): boolean {
  if (a.defaultRoutes.length !== b.defaultRoutes.length) return false;
  for (let i = 0; i < a.defaultRoutes.length; i++) {
    const x = a.defaultRoutes[i];
    const y = b.defaultRoutes[i];
    if (x.family !== y.family || x.gateway !== y.gateway || x.metric !== y.metric) return false;
  }
  return true;
}

export function diffSnapshots(prev: NetSnapshot, next: NetSnapshot): NetDiff {
  const changed: string[] = [];
  let routes = false;
  const before = new Map(prev.interfaces.map((i) => [i.name, i]));
  for (const n of next.interfaces) {
    const p = before.get(n.name);
    before.delete(n.name);
    if (!p) {
      changed.push(n.name);
      if (n.defaultRoutes.length) routes = true;
      continue;
    }
    if (!sameInterface(p, n)) changed.push(n.name);
    if (!sameRoutes(p, n)) routes = true;
  }
  for (const [name, p] of before) {
    changed.push(name);
    if (p.defaultRoutes.length) routes = true;
  }
  return { changed, routes };
}

function freeze(interfaces: NetInterface[], generation: number): NetSnapshot {
  for (const i of interfaces) {
    Object.freeze(i.addresses);
    Object.freeze(i.defaultRoutes);
    Object.freeze(i);
  }
  return Object.freeze({ generation, takenAt: Date.now(), interfaces: Object.freeze(interfaces) });
}

/** Find the interface that holds `ip` (IPv6 link-local may carry "%ifname"). */
export function interfaceOf(snap: NetSnapshot, ip: string): NetInterface | undefined {
  const pct = ip.indexOf('%');
  if (pct >= 0) {
    const name = ip.slice(pct + 1);
    return snap.interfaces.find((i) => i.name === name);
  }
  for (const i of snap.interfaces) for (const a of i.addresses) if (a.ip === ip) return i;
  return undefined;
}

/** Usable for new flows: up, with carrier, with an address of the family. */
export function usable(i: NetInterface, family: 4 | 6): boolean {
  return i.up && i.carrier && i.addresses.some((a) => a.family === family);
}

/** The best default route now, per family (lowest metric), for display. */
export function bestDefault(snap: NetSnapshot, family: 4 | 6): { ifname: string; metric: number } | undefined {
  let best: { ifname: string; metric: number } | undefined;
  for (const i of snap.interfaces) {
    if (!i.up || !i.carrier) continue;
    for (const r of i.defaultRoutes)
      if (r.family === family && (!best || r.metric < best.metric)) best = { ifname: i.name, metric: r.metric };
  }
  return best;
}

/** What watchClosely returns when there is nothing to hold (no probe, or closed). */
function noRelease(): void {}

export class Monitor implements NetMonitor {
  #snap: NetSnapshot;
  #listeners = new Set<ChangeFn>();
  /** changes read but not yet told to the listeners (they hear on a later tick, in order) */
  #pending: [NetSnapshot, NetSnapshot, NetDiff][] = [];
  readonly #probeMs: number;
  #probe: NodeJS.Timeout | undefined;
  #holds = 0;
  #reader: StateReader;
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #debounceMs: number;
  #stopWatch: (() => void) | undefined;
  #closed = false;
  #epoch = 0;
  /** events are being watched (ip monitor runs); without them only the poll sees a change */
  #watching = false;

  constructor(opts: MonitorOptions = {}) {
    this.#reader = opts.reader ?? createLinuxReader();
    this.#debounceMs = opts.debounceMs ?? 30;
    this.#probeMs = opts.probeMs ?? 250;
    this.#snap = freeze(this.#reader.read(), 1);
    const pollMs = opts.pollMs ?? 2000;
    if (pollMs > 0) {
      this.#poll = setInterval(() => this.#reread(), pollMs);
      this.#poll.unref();
    }
    if (opts.watch !== false && !opts.reader) {
      this.#stopWatch = watchLinux(
        () => this.poke(),
        (watching) => {
          this.#watching = watching;
          this.#epoch++; // events may have been missed around a start or a stop
        },
      );
    }
  }

  get epoch(): number | undefined {
    return this.#watching && !this.#closed ? this.#epoch : undefined;
  }

  current(): NetSnapshot {
    return this.#snap;
  }

  onChange(fn: ChangeFn): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Something changed (an event): re-read after the debounce. */
  poke(): void {
    this.#epoch++; // at once, before the debounce: a cached route choice is stale from now
    if (this.#closed || this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#reread();
    }, this.#debounceMs);
    this.#debounce.unref();
  }

  /** Re-read synchronously; a difference is announced on a later tick. Returns the current snapshot. */
  readNow(): NetSnapshot {
    this.#reread();
    return this.#snap;
  }

  watchClosely(): () => void {
    if (this.#closed || this.#probeMs <= 0) return noRelease;
    this.#holds++;
    // a probe still running after the last hold went goes on: it stops at its first tick without
    // a hold, so traffic that comes and goes (one flow after another) does not remake the timer
    if (!this.#probe) {
      this.#probe = setInterval(this.#probeTick, this.#probeMs);
      this.#probe.unref();
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds--;
    };
  }

  readonly #probeTick = (): void => {
    if (this.#holds === 0) {
      clearInterval(this.#probe);
      this.#probe = undefined;
      return;
    }
    if (this.#reader.linksChanged?.(this.#snap) !== false) this.#reread();
  };

  /** Someone watches closely: the probe re-reads every probeMs. */
  get probing(): boolean {
    return this.#holds > 0;
  }

  #reread(): void {
    if (this.#closed) return;
    let interfaces: NetInterface[];
    try {
      interfaces = this.#reader.read();
    } catch {
      return; // keep the last good snapshot; the next poll tries again
    }
    const prev = this.#snap;
    const next = freeze(interfaces, prev.generation + 1);
    const diff = diffSnapshots(prev, next);
    if (diff.changed.length === 0 && !diff.routes) return;
    this.#epoch++;
    this.#snap = next;
    // tell the listeners on a later tick, never inside the caller's stack (a new flow's placement
    // reads the host through readNow; the flow table's cuts must not run in the middle of it)
    if (this.#pending.push([prev, next, diff]) === 1) queueMicrotask(() => this.#deliver());
  }

  #deliver(): void {
    const changes = this.#pending;
    this.#pending = [];
    for (const [prev, next, diff] of changes) {
      for (const fn of this.#listeners) {
        if (this.#closed) return;
        fn(prev, next, diff);
      }
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#poll) clearInterval(this.#poll);
    if (this.#debounce) clearTimeout(this.#debounce);
    if (this.#probe) clearInterval(this.#probe);
    this.#probe = undefined;
    this.#pending = [];
    this.#stopWatch?.();
    this.#reader.close?.();
    this.#listeners.clear();
  }
}

/** Why a path pinned to `ifname` (and `localAddress`) is broken in `snap`, or undefined if it is fine. */
export function lossOf(snap: NetSnapshot, ifname: string, localAddress: string | null): string | undefined {
  const iface = snap.interfaces.find((i) => i.name === ifname);
  if (!iface) return 'interface gone';
  if (iface.loopback) return undefined;
  if (!iface.up) return 'interface down';
  if (!iface.carrier) return 'no carrier';
  if (localAddress && !iface.addresses.some((a) => a.ip === localAddress || a.ip.split('%')[0] === localAddress))
    return 'address gone';
  return undefined;
}
