// The system resolver, guarded. Node's dns.lookup (getaddrinfo) runs on libuv's thread pool (4
// threads, shared with fs, crypto and zlib) and has no timeout: a few lookups hanging on a DNS
// server that went away with its interface take every thread for as long as glibc retries,
// and everything else waits behind them, names in /etc/hosts included. So:
// - a name in the hosts file is answered from the file, at once, without a thread;
// - at most `maxConcurrent` lookups run at a time (half the pool), the rest queue (bounded);
//   a slot is given back when getaddrinfo really returns, not when its caller gave up, so the
//   cap holds for threads, not just for promises;
// - concurrent lookups of one name share one getaddrinfo;
// - each caller gets an answer or a DnsTimeoutError (HF_DNS_TIMEOUT) within `timeoutMs`.
import { readFileSync, statSync } from 'node:fs';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { DnsTimeoutError } from './errors.js';

export interface LookupAnswer {
  readonly address: string;
  readonly family: number;
}

export type LookupFn = (host: string) => Promise<LookupAnswer[]>;

export interface LookupGuardOptions {
  /** read per call, so a reload applies to the next lookup */
  readonly settings: { readonly timeoutMs: number };
  /** getaddrinfo calls at once (default: half of UV_THREADPOOL_SIZE, at least 1) */
  readonly maxConcurrent?: number;
  /** lookups waiting for a slot; past this, a lookup fails at once */
  readonly maxQueued?: number;
  readonly hostsFile?: string;
  /** the lookup to guard (tests); default dns.lookup(host, { all: true, verbatim: true }) */
  readonly lookup?: LookupFn;
}

export function defaultMaxConcurrent(): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.floor(pool / 2));
}

/** name -> addresses, from hosts(5) text (first field the address, then names; # comments). */
export function parseHosts(text: string): Map<string, LookupAnswer[]> {
  const out = new Map<string, LookupAnswer[]>();
  for (const line of text.split('\n')) {
    const fields = line.replace(/#.*/, '').trim().split(/\s+/);
    if (fields.length < 2) continue;
    const ip = fields[0].split('%')[0];
    const family = isIP(ip);
    if (family === 0) continue;
    for (const name of fields.slice(1)) {
      const key = name.toLowerCase().replace(/\.$/, '');
      const list = out.get(key) ?? [];
      if (!list.some((a) => a.address === fields[0])) list.push({ address: fields[0], family });
      out.set(key, list);
    }
  }
  return out;
}

/** The hosts file, read again when it changes (a stat per lookup; no thread pool). */
function hostsReader(file: string): (name: string) => LookupAnswer[] | undefined {
  let stamp = '';
  let table = new Map<string, LookupAnswer[]>();
  return (name) => {
    let st: { mtimeMs: number; size: number; ino: number };
    try {
      st = statSync(file);
    } catch {
      return undefined;
    }
    const now = `${st.mtimeMs}|${st.size}|${st.ino}`;
    if (now !== stamp) {
      try {
        table = parseHosts(readFileSync(file, 'utf8'));
        stamp = now;
      } catch {
        return undefined;
      }
    }
    return table.get(name.toLowerCase().replace(/\.$/, ''));
  };
}

const systemLookup: LookupFn = (host) => dnsLookup(host, { all: true, verbatim: true });

export interface GuardedLookup {
  (host: string): Promise<LookupAnswer[]>;
  /** getaddrinfo calls running now (tests, /status) */
  readonly running: number;
}

export function guardLookup(opts: LookupGuardOptions): GuardedLookup {
  const max = opts.maxConcurrent ?? defaultMaxConcurrent();
  const maxQueued = opts.maxQueued ?? 256;
  const lookup = opts.lookup ?? systemLookup;
  const fromHosts = hostsReader(opts.hostsFile ?? '/etc/hosts');
  let running = 0;
  const queue: (() => void)[] = [];
  /** per name: the one lookup, and how many callers still wait for it */
  const inFlight = new Map<string, { p: Promise<LookupAnswer[]>; waiters: number }>();

  const next = () => {
    while (running < max && queue.length) queue.shift()!();
  };

  /** One getaddrinfo per name at a time, within the cap; settles when getaddrinfo does. */
  const shared = (key: string, host: string): { p: Promise<LookupAnswer[]>; waiters: number } => {
    const have = inFlight.get(key);
    if (have) {
      have.waiters++;
      return have;
    }
    const entry = { p: undefined as unknown as Promise<LookupAnswer[]>, waiters: 1 };
    entry.p = new Promise<LookupAnswer[]>((resolve, reject) => {
      const run = () => {
        if (entry.waiters === 0) {
          // everyone who asked gave up while it queued: do not spend a thread on it
          inFlight.delete(key);
          reject(new DnsTimeoutError(`resolve ${host}: given up while waiting for the system resolver`));
          next();
          return;
        }
        running++;
        let call: Promise<LookupAnswer[]>;
        try {
          call = lookup(host);
        } catch (err) {
          call = Promise.reject(err); // a name Node refuses outright
        }
        call
          .then(resolve, reject)
          .finally(() => {
            running--;
            inFlight.delete(key);
            next();
          });
      };
      if (running < max) run();
      else if (queue.length >= maxQueued) {
        reject(new DnsTimeoutError(`resolve ${host}: ${maxQueued} lookups already waiting for the system resolver`));
        queueMicrotask(() => inFlight.delete(key));
      } else queue.push(run);
    });
    inFlight.set(key, entry);
    return entry;
  };

  const guarded = ((host: string) => {
    const hit = fromHosts(host);
    if (hit) return Promise.resolve(hit.map((a) => ({ ...a })));
    const timeoutMs = opts.settings.timeoutMs;
    return new Promise<LookupAnswer[]>((resolve, reject) => {
      let done = false;
      const entry = shared(host.toLowerCase(), host);
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        entry.waiters--;
        reject(new DnsTimeoutError(`resolve ${host}: the system resolver did not answer in ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      entry.p.then(
        (v) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }) as GuardedLookup;
  Object.defineProperty(guarded, 'running', { get: () => running });
  return guarded;
}
