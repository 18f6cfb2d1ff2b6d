// Shared fakes for unit tests: a manual clock, interface/snapshot builders, a swappable monitor,
// a fake state reader for the real Monitor, a pino sink that collects JSON lines, deferred().
import { pino, type Logger } from 'pino';
import type {
  Clock,
  DefaultRoute,
  Family,
  IfAddress,
  NetDiff,
  NetInterface,
  NetMonitor,
  NetSnapshot,
} from '../../src/contracts.js';
import type { StateReader } from '../../src/net/monitor.js';
import { diffSnapshots } from '../../src/net/monitor.js';

// ---------------------------------------------------------------------------------------------
// deferred (Node 20 has no Promise.withResolvers)

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
  reject(err: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Let pending promise callbacks run (microtasks and one macrotask turn). */
export function flush(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

// ---------------------------------------------------------------------------------------------
// FakeClock: time moves only when a test says so; timers fire in due order.

interface FakeTimer {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
  cancelled: boolean;
}

export class FakeClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers: FakeTimer[] = [];

  constructor(start = 1_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): { cancel(): void } {
    const t: FakeTimer = { id: this.#nextId++, at: this.#now + Math.max(0, ms), fn, cancelled: false };
    this.#timers.push(t);
    return {
      cancel: () => {
        t.cancelled = true;
        this.#timers = this.#timers.filter((x) => x !== t);
      },
    };
  }

  /** Timers scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.#timers.length;
  }

  /** Move time forward by `ms`, firing each timer that falls due, in order. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      let next: FakeTimer | undefined;
      for (const t of this.#timers) if (t.at <= until && (!next || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t;
      if (!next) break;
      this.#timers = this.#timers.filter((x) => x !== next);
      this.#now = next.at;
      next.fn();
    }
    this.#now = until;
  }
}

// ---------------------------------------------------------------------------------------------
// Interfaces and snapshots

export interface IfaceSpec {
  index?: number;
  up?: boolean;
  carrier?: boolean;
  loopback?: boolean;
  /** "10.0.1.2/24", "fd00:1::2/64", "fe80::1%if1/64"; prefix defaults to 24 / 64 */
  addresses?: readonly string[];
  /** default routes: family + metric (+ gateway) */
  routes?: readonly { family: Family; metric: number; gateway?: string | null }[];
}

function addr(spec: string): IfAddress {
  const slash = spec.lastIndexOf('/');
  const ip = slash >= 0 ? spec.slice(0, slash) : spec;
  const family: Family = ip.includes(':') ? 6 : 4;
  const prefixLen = slash >= 0 ? Number(spec.slice(slash + 1)) : family === 6 ? 64 : 24;
  return { ip, family, prefixLen };
}

let autoIndex = 10;

export function iface(name: string, spec: IfaceSpec = {}): NetInterface {
  const defaultRoutes: DefaultRoute[] = (spec.routes ?? []).map((r) => ({
    family: r.family,
    gateway: r.gateway ?? null,
    metric: r.metric,
  }));
  return {
    name,
    index: spec.index ?? autoIndex++,
    up: spec.up ?? true,
    carrier: spec.carrier ?? true,
    loopback: spec.loopback ?? false,
    addresses: (spec.addresses ?? []).map(addr),
    defaultRoutes,
  };
}

export function loopback(): NetInterface {
  return iface('lo', { index: 1, loopback: true, addresses: ['127.0.0.1/8', '::1/128'] });
}

/** A copy of `i` with some fields replaced. */
export function withIface(i: NetInterface, patch: Partial<NetInterface>): NetInterface {
  return { ...i, ...patch };
}

export function snapshot(interfaces: readonly NetInterface[], generation = 1, takenAt = 0): NetSnapshot {
  return { generation, takenAt, interfaces };
}

// ---------------------------------------------------------------------------------------------
// FakeMonitor: a NetMonitor whose snapshot the test swaps; set() announces real differences.
// Unlike the real Monitor (which tells its listeners on a later tick), set() tells them at once,
// so a test steps the fake network and the fake clock by hand; test/unit/monitor.test.ts checks
// the real Monitor's later-tick delivery.

type ChangeFn = (prev: NetSnapshot, next: NetSnapshot, diff: NetDiff) => void;

export class FakeMonitor implements NetMonitor {
  #snap: NetSnapshot;
  readonly #listeners = new Set<ChangeFn>();
  closed = false;

  constructor(interfaces: readonly NetInterface[]) {
    this.#snap = snapshot(interfaces, 1);
  }

  current(): NetSnapshot {
    return this.#snap;
  }

  onChange(fn: ChangeFn): () => void {
    this.#listeners.add(fn);
    return () => {
      this.#listeners.delete(fn);
    };
  }

  get listeners(): number {
    return this.#listeners.size;
  }

  readNow(): NetSnapshot {
    return this.#snap;
  }

  /** holds of watchClosely() not yet released */
  closeWatches = 0;

  watchClosely(): () => void {
    this.closeWatches++;
    let released = false;
    return () => {
      if (!released) this.closeWatches--;
      released = true;
    };
  }

  /** Replace the interfaces; listeners hear of it if something really changed. */
  set(interfaces: readonly NetInterface[]): NetDiff {
    const prev = this.#snap;
    const next = snapshot(interfaces, prev.generation + 1);
    const diff = diffSnapshots(prev, next);
    this.#snap = next;
    if (diff.changed.length || diff.routes) for (const fn of this.#listeners) fn(prev, next, diff);
    return diff;
  }

  close(): void {
    this.closed = true;
    this.#listeners.clear();
  }
}

/** A StateReader for the real Monitor: returns fresh copies of what the test last set. */
export class FakeReader implements StateReader {
  #interfaces: readonly NetInterface[];
  reads = 0;
  fail: Error | undefined;

  constructor(interfaces: readonly NetInterface[]) {
    this.#interfaces = interfaces;
  }

  set(interfaces: readonly NetInterface[]): void {
    this.#interfaces = interfaces;
  }

  read(): NetInterface[] {
    this.reads++;
    if (this.fail) throw this.fail;
    // the Monitor freezes what it is given: hand out copies so the test's objects stay its own
    return this.#interfaces.map((i) => ({
      ...i,
      addresses: i.addresses.map((a) => ({ ...a })),
      defaultRoutes: i.defaultRoutes.map((r) => ({ ...r })),
    }));
  }
}

// ---------------------------------------------------------------------------------------------
// Logs: a pino logger writing into an array of parsed JSON lines.

export interface LogSink {
  readonly log: Logger;
  /** every line written so far, parsed */
  readonly lines: Record<string, unknown>[];
  /** the lines whose msg is `msg` */
  withMsg(msg: string): Record<string, unknown>[];
}

export function logSink(level: 'trace' | 'debug' | 'info' | 'warn' = 'info'): LogSink {
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  const stream = {
    write(chunk: string): void {
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      }
    },
  };
  const log = pino({ level }, stream);
  return { log, lines, withMsg: (msg) => lines.filter((l) => l.msg === msg) };
}
