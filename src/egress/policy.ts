// The egress policy: which interfaces a new flow may use, best first. The kernel's choice leads
// (so specific routes, VPNs and policy rules count), unless affinity says the destination already
// lives on another usable interface. Interfaces without carrier or address never take new flows;
// one that just failed a dial sits out a short back-off. Other usable interfaces with a default
// route follow, by metric, as fallbacks.
import { LRUCache } from 'lru-cache';
import type {
  Clock,
  Destination,
  Egress,
  EgressPolicy,
  Family,
  Lease,
  NetInterface,
  NetMonitor,
  NetSnapshot,
  Target,
} from '../contracts.js';
import { HfCode, HoldfastError, NoEgressError } from '../errors.js';
import { usable } from '../net/monitor.js';
import { kernelChoice, type SourceFinder } from '../net/route.js';

export interface PolicyOptions {
  readonly affinity: { readonly mode: 'host' | 'address' | 'off'; readonly lingerMs: number };
  /** how long an interface whose dial failed is avoided for new flows */
  readonly backoffMs?: number;
  readonly maxAffinityEntries?: number;
}

interface AffinityEntry {
  ifname: string;
  source: string;
  live: number;
  releasedAt: number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

function isLinkLocal(ip: string, family: Family): boolean {
  return family === 6 ? /^fe[89ab]/i.test(ip) : ip.startsWith('169.254.');
}

/** The address of `iface` to bind for `target`: same family, global before link-local. */
export function sourceFor(iface: NetInterface, target: Target): string | undefined {
  const wantLinkLocal = isLinkLocal(target.ip, target.family);
  let fallback: string | undefined;
  for (const a of iface.addresses) {
    if (a.family !== target.family) continue;
    if (isLinkLocal(a.ip, a.family) === wantLinkLocal) return a.ip;
    fallback ??= a.ip;
  }
  return fallback;
}

export class Policy implements EgressPolicy {
  readonly #monitor: NetMonitor & { readNow?: () => NetSnapshot };
  readonly #find: SourceFinder;
  readonly #clock: Clock;
  #mode: 'host' | 'address' | 'off';
  #lingerMs: number;
  readonly #backoffMs: number;
  readonly #affinity: LRUCache<string, AffinityEntry>;
  readonly #backoff = new Map<string, number>();

  constructor(monitor: NetMonitor, find: SourceFinder, opts: PolicyOptions, clock: Clock = systemClock) {
    this.#monitor = monitor;
    this.#find = find;
    this.#clock = clock;
    this.#mode = opts.affinity.mode;
    this.#lingerMs = opts.affinity.lingerMs;
    this.#backoffMs = opts.backoffMs ?? 5000;
    this.#affinity = new LRUCache({ max: opts.maxAffinityEntries ?? 10_000 });
  }

  /** New affinity settings (a reload). Existing entries stay; a change of mode starts afresh. */
  configure(opts: Pick<PolicyOptions, 'affinity'>): void {
    if (opts.affinity.mode !== this.#mode) this.#affinity.clear();
    this.#mode = opts.affinity.mode;
    this.#lingerMs = opts.affinity.lingerMs;
  }

  #key(dst: Destination, target: Target): string | undefined {
    if (this.#mode === 'off') return undefined;
    if (this.#mode === 'host' && dst.isName) return dst.host.toLowerCase();
    return target.ip;
  }

  #inBackoff(ifname: string, now: number): boolean {
    const until = this.#backoff.get(ifname);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#backoff.delete(ifname);
    return false;
  }

  /** The affinity entry for this destination, if it is live or lingering. */
  affinityOf(dst: Destination, target: Target): { ifname: string; source: string } | undefined {
    const key = this.#key(dst, target);
    if (key === undefined) return undefined;
    const e = this.#affinity.get(key);
    if (!e) return undefined;
    if (e.live === 0 && this.#clock.now() - e.releasedAt > this.#lingerMs) {
      this.#affinity.delete(key);
      return undefined;
    }
    return e;
  }

  /**
   * The interfaces whose DNS servers may resolve `dst`, best first: the affinity's (mode host,
   * while live or lingering, with carrier), then the usable ones with a default route by metric
   * (IPv4's, else IPv6's), those in back-off last: a name is resolved where its flow will go, and
   * the connector falls back along this list as the dialer does (DESIGN rule 6).
   */
  resolvingInterfaces(dst: Destination): NetInterface[] {
    const snap = this.#monitor.current();
    const now = this.#clock.now();
    const out: NetInterface[] = [];
    if (this.#mode === 'host') {
      const e = this.#affinity.get(dst.host.toLowerCase());
      if (e && (e.live > 0 || now - e.releasedAt <= this.#lingerMs)) {
        const iface = snap.interfaces.find((i) => i.name === e.ifname);
        if (iface && iface.up && iface.carrier) out.push(iface);
      }
    }
    const metricOf = (i: NetInterface, family: Family) => {
      let m = Infinity;
      for (const r of i.defaultRoutes) if (r.family === family && r.metric < m) m = r.metric;
      return m;
    };
    const ranked = snap.interfaces
      .filter((i) => !i.loopback && i.up && i.carrier && i.defaultRoutes.length > 0 && !out.includes(i))
      .map((i) => ({ i, v4: metricOf(i, 4), v6: metricOf(i, 6), off: this.#inBackoff(i.name, now) }))
      .sort((a, b) => Number(a.off) - Number(b.off) || a.v4 - b.v4 || a.v6 - b.v6);
    for (const r of ranked) out.push(r.i);
    return out;
  }

  async candidates(target: Target, dst: Destination): Promise<Egress[]> {
    // The kernel's choice first: it may re-read the monitor (a new interface or VPN the last
    // snapshot does not know yet), so the snapshot is taken after it.
    const choice = await kernelChoice(
      target,
      this.#find,
      this.#monitor.current(),
      this.#monitor.readNow?.bind(this.#monitor),
    );
    // ESTALE: the kernel chose a source address that no usable interface lists (the monitor, like
    // getifaddrs, shows no addresses on a link without carrier): that interface cannot take the
    // flow, so go on to the others. Anything else is the kernel's own no: respect it.
    if (choice.kind === 'none' && choice.code !== 'ESTALE') {
      // no route at all, or an unreachable/prohibit rule (a VPN kill switch): respect it
      throw new HoldfastError(
        choice.code === 'EHOSTUNREACH' || choice.code === 'EACCES' ? HfCode.HOST_UNREACHABLE : HfCode.NET_UNREACHABLE,
        choice.why,
      );
    }
    const snap = this.#monitor.current();
    const now = this.#clock.now();
    const family = target.family;
    const byName = (name: string) => snap.interfaces.find((i) => i.name === name);
    const kernelIf = choice.kind === 'route' ? byName(choice.ifname) : undefined;
    const kernelSource = choice.kind === 'route' ? choice.source : undefined;
    if (kernelIf?.loopback) {
      // loopback destinations: the only path there is
      return [{ ifname: kernelIf.name, source: kernelSource!, family, placedBy: 'route' }];
    }

    const out: Egress[] = [];
    const seen = new Set<string>();
    const push = (iface: NetInterface, placedBy: Egress['placedBy'], source?: string) => {
      if (seen.has(iface.name)) return;
      const src = source ?? sourceFor(iface, target);
      if (!src) return;
      seen.add(iface.name);
      out.push({ ifname: iface.name, source: src, family, placedBy });
    };

    // 1. affinity: join the live (or lingering) flows of this destination if their interface is usable
    const aff = this.affinityOf(dst, target);
    if (aff) {
      const iface = byName(aff.ifname);
      if (iface && usable(iface, family) && iface.addresses.some((a) => a.ip === aff.source)) {
        push(iface, 'affinity', aff.source);
      }
    }

    // 2. the kernel's choice, if its interface is usable (linkdown routes still win in the
    //    kernel, so carrier is checked here) and not in back-off
    if (kernelIf && usable(kernelIf, family) && !this.#inBackoff(kernelIf.name, now)) {
      push(kernelIf, out.length ? 'fallback' : 'route', kernelSource);
    }

    // 3. the other usable interfaces with a default route of this family, by metric
    const rest: { iface: NetInterface; metric: number }[] = [];
    for (const iface of snap.interfaces) {
      if (seen.has(iface.name) || iface.loopback || !usable(iface, family)) continue;
      if (this.#inBackoff(iface.name, now)) continue;
      let metric = Infinity;
      for (const r of iface.defaultRoutes) if (r.family === family && r.metric < metric) metric = r.metric;
      if (metric !== Infinity) rest.push({ iface, metric });
    }
    rest.sort((a, b) => a.metric - b.metric);
    for (const r of rest) push(r.iface, 'fallback');

    // 4. nothing better: the kernel's interface even if it is in back-off
    if (out.length === 0 && kernelIf && usable(kernelIf, family)) push(kernelIf, 'route', kernelSource);

    if (out.length === 0) {
      if (choice.kind === 'none') throw new HoldfastError(HfCode.NET_UNREACHABLE, choice.why);
      throw new NoEgressError(
        `no usable interface for ${target.ip}: the kernel chose ${choice.ifname}, which has no carrier or no IPv${family} address`,
      );
    }
    return out;
  }

  /**
   * The placement of a flow that connected through `egress`, held for affinity until given back.
   * `release` is safe to repeat: only the first call counts.
   */
  lease(dst: Destination, target: Target, egress: Egress): Lease {
    this.connected(dst, target, egress);
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.released(dst, target, egress);
      },
    };
  }

  /**
   * The affinity table now (expired entries dropped first): entries, and the live flows they
   * count. Both return to zero once every lease is given back and the linger has passed.
   */
  affinityTable(): { entries: number; live: number } {
    const now = this.#clock.now();
    let live = 0;
    for (const [key, e] of [...this.#affinity.entries()]) {
      if (e.live === 0 && now - e.releasedAt > this.#lingerMs) this.#affinity.delete(key);
      else live += e.live;
    }
    return { entries: this.#affinity.size, live };
  }

  /** Prefer lease(): a flow's placement is given back by the flow that holds it. */
  connected(dst: Destination, target: Target, egress: Egress): void {
    const key = this.#key(dst, target);
    if (key === undefined) return;
    const e = this.#affinity.get(key);
    if (e && e.ifname === egress.ifname && e.source === egress.source) e.live++;
    else {
      // a different interface (the old one died or lingered out): the newest flow leads
      this.#affinity.set(key, { ifname: egress.ifname, source: egress.source, live: 1, releasedAt: 0 });
    }
  }

  released(dst: Destination, target: Target, egress?: Egress): void {
    const key = this.#key(dst, target);
    if (key === undefined) return;
    const e = this.#affinity.get(key);
    // an entry another interface (or address) took over since: not this flow's to count down
    if (!e || (egress && (e.ifname !== egress.ifname || e.source !== egress.source))) return;
    if (e.live > 0) e.live--;
    if (e.live === 0) e.releasedAt = this.#clock.now();
  }

  failed(ifname: string): void {
    this.#backoff.set(ifname, this.#clock.now() + this.#backoffMs);
  }
}
