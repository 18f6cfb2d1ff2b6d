// One small function for one hard question: which interface would the kernel use for this
// destination now? A throwaway connected UDP socket makes the kernel run its full route lookup
// (specific routes, VPNs, policy rules) and reveal the source address it picked, as Dante's
// getoutaddr() does; the address names the interface. No filtering here: carrier, exclusions
// and affinity belong to the policy. The answers may be cached (cachedSourceFinder) for as long
// as the monitor hears nothing from the kernel.
import { createSocket } from 'node:dgram';
import type { NetSnapshot, RouteChoice, Target } from '../contracts.js';
import type { NativeAddon } from '../native.js';
import { interfaceOf } from './monitor.js';

export type SourceFinder = (family: 4 | 6, ip: string) => Promise<string> | string;

/** The source address the kernel picks, through the addon (synchronous) when it loaded. */
export function createSourceFinder(addon: NativeAddon | undefined): SourceFinder {
  if (addon) return (family, ip) => addon.routeSource(family, ip);
  return (family, ip) =>
    new Promise<string>((resolve, reject) => {
      const s = createSocket(family === 6 ? 'udp6' : 'udp4');
      s.on('error', (err) => {
        s.close();
        reject(err);
      });
      s.connect(9, ip, () => {
        let addr: string;
        try {
          addr = s.address().address;
        } catch (err) {
          s.close();
          reject(err);
          return;
        }
        s.close();
        resolve(addr);
      });
    });
}

export interface SourceCacheOptions {
  /**
   * The monitor's epoch: an answer holds while this returns the value it was learned at.
   * `undefined` (nothing watched) means no caching.
   */
  readonly epoch: () => number | undefined;
  /** an answer is asked again after this long anyway (what no event reports, e.g. nft marks) */
  readonly maxAgeMs?: number;
  /** at most this many destinations (then the cache starts over) */
  readonly maxEntries?: number;
  readonly now?: () => number;
}

/**
 * `find`, remembering each destination's answer until the monitor hears any link, address,
 * route or rule event (or `maxAgeMs` passes): a new flow to a known destination skips the probe.
 * Errors are never cached. The one cost: a flow that starts in the moment between a route change
 * and the monitor hearing of it goes where the old route pointed (a flow that started a moment
 * earlier would have too).
 */
export function cachedSourceFinder(find: SourceFinder, o: SourceCacheOptions): SourceFinder {
  const maxAgeMs = o.maxAgeMs ?? 1000;
  const maxEntries = o.maxEntries ?? 4096;
  const now = o.now ?? (() => performance.now());
  const known = new Map<string, { source: string; at: number }>();
  let seenEpoch: number | undefined;
  const learn = (key: string, source: string, at: number): string => {
    if (known.size >= maxEntries) known.clear();
    known.set(key, { source, at });
    return source;
  };
  return (family, ip) => {
    const epoch = o.epoch();
    if (epoch === undefined) return find(family, ip);
    if (epoch !== seenEpoch) {
      known.clear(); // every answer is older than this event
      seenEpoch = epoch;
    }
    const key = family === 6 ? `6 ${ip}` : ip;
    const t = now();
    const hit = known.get(key);
    if (hit !== undefined && t - hit.at < maxAgeMs) return hit.source;
    const s = find(family, ip);
    if (typeof s === 'string') return learn(key, s, t);
    // an answer that arrives after another event is not kept
    return s.then((source) => (o.epoch() === epoch && seenEpoch === epoch ? learn(key, source, t) : source));
  };
}

/**
 * The `code` of a choice whose source address no interface of the snapshot lists (not an errno:
 * the kernel did answer, but with an address the monitor does not show, e.g. on a link without
 * carrier).
 */
export const SOURCE_UNLISTED = 'SOURCE_UNLISTED';

function choose(source: string, snap: NetSnapshot): RouteChoice {
  const iface = interfaceOf(snap, source);
  if (!iface) return { kind: 'none', why: `source ${source} belongs to no known interface`, code: SOURCE_UNLISTED };
  return { kind: 'route', ifname: iface.name, ifindex: iface.index, source };
}

/**
 * The kernel's choice for `target` now, mapped to an interface of `snap` (re-read through
 * `reread` once if the source address is not in it yet). Synchronous when `find` answers at once
 * (a cached route: most flows), so a new flow waits for no promise it does not need.
 */
export function kernelChoice(
  target: Target,
  find: SourceFinder,
  snap: NetSnapshot,
  reread?: () => NetSnapshot,
): RouteChoice | Promise<RouteChoice> {
  let s: string | Promise<string>;
  try {
    s = find(target.family, target.ip);
  } catch (err) {
    return noRoute(target, err);
  }
  if (typeof s === 'string') return pick(s, snap, reread);
  return s.then(
    (source) => pick(source, snap, reread),
    (err: unknown) => noRoute(target, err),
  );
}

function pick(source: string, snap: NetSnapshot, reread: (() => NetSnapshot) | undefined): RouteChoice {
  const c = choose(source, snap);
  return c.kind === 'none' && reread ? choose(source, reread()) : c;
}

function noRoute(target: Target, err: unknown): RouteChoice {
  const code = (err as { code?: string } | undefined)?.code ?? 'EUNKNOWN';
  return { kind: 'none', why: `no route to ${target.ip}: ${code}`, code };
}
