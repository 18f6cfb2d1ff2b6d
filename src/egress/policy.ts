// The egress policy: which interfaces a new flow may use, best first. The kernel's choice leads
// (so specific routes, VPNs and policy rules count), unless affinity says the destination already
// lives on another usable interface. Interfaces without carrier or address never take new flows;
// one that just failed a dial sits out a short back-off. Other usable interfaces with a default
// route follow, by metric, as fallbacks. Roles and destination rules (roles.ts, rules.ts) first
// narrow the interfaces to the best tier present; all of the above happens inside it.
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
  RouteChoice,
  Target,
} from '../contracts.js';
import { HfCode, HoldfastError, NoEgressError } from '../errors.js';
import { usable } from '../net/monitor.js';
import { kernelChoice, SOURCE_UNLISTED, type SourceFinder } from '../net/route.js';
import { isLinkLocal } from '../net/addr.js';
import { bestForNewFlows, bestTier, onLink, orderCandidates, tierOf, type Placement } from './roles.js';
import { firstMatch, viaIndex, type Rule } from './rules.js';

export interface PolicyOptions {
  readonly affinity: { readonly mode: 'host' | 'address' | 'off'; readonly lingerMs: number };
  /** how long an interface whose dial failed is avoided for new flows */
  readonly backoffMs?: number;
  readonly maxAffinityEntries?: number;
  /** each interface's type, metered state and role (default: every interface normal) */
  readonly roles?: { placementOf(iface: NetInterface): Placement };
  /** destination rules, first match wins */
  readonly rules?: readonly Rule[];
}

const allNormal: Placement = { type: 'other', metered: null, role: 'normal', roleBy: 'default' };

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

/** The address of `iface` to bind for `target`: same family, global before link-local. */
export function sourceFor(iface: NetInterface, target: Target): string | undefined {
  const wantLinkLocal = isLinkLocal(target.ip);
  let fallback: string | undefined;
  for (const a of iface.addresses) {
    if (a.family !== target.family) continue;
    if (isLinkLocal(a.ip) === wantLinkLocal) return a.ip;
    fallback ??= a.ip;
  }
  return fallback;
}

export class Policy implements EgressPolicy {
  readonly #monitor: NetMonitor;
  readonly #find: SourceFinder;
  /** the monitor read now, for a kernel choice whose source the snapshot does not list yet */
  readonly #reread = (): NetSnapshot => this.#monitor.readNow();
  readonly #clock: Clock;
  #mode: 'host' | 'address' | 'off';
  #lingerMs: number;
  readonly #backoffMs: number;
  readonly #affinity: LRUCache<string, AffinityEntry>;
  readonly #backoff = new Map<string, number>();
  readonly #roles: PolicyOptions['roles'];
  #rules: readonly Rule[];

  constructor(monitor: NetMonitor, find: SourceFinder, opts: PolicyOptions, clock: Clock = systemClock) {
    this.#monitor = monitor;
    this.#find = find;
    this.#clock = clock;
    this.#mode = opts.affinity.mode;
    this.#lingerMs = opts.affinity.lingerMs;
    this.#backoffMs = opts.backoffMs ?? 5000;
    this.#affinity = new LRUCache({ max: opts.maxAffinityEntries ?? 10_000 });
    this.#roles = opts.roles;
    this.#rules = opts.rules ?? [];
  }

  /**
   * New affinity settings and rules (a reload; roles are reloaded in their own book). Existing
   * entries stay; a change of mode starts afresh. Live flows keep their interface.
   */
  configure(opts: Pick<PolicyOptions, 'affinity' | 'rules'>): void {
    if (opts.affinity.mode !== this.#mode) this.#affinity.clear();
    this.#mode = opts.affinity.mode;
    this.#lingerMs = opts.affinity.lingerMs;
    if (opts.rules) this.#rules = opts.rules;
  }

  /** An interface's type, metered state and role, as new flows see them now. */
  placementOf(iface: NetInterface): Placement {
    return this.#roles?.placementOf(iface) ?? allNormal;
  }

  /** The interface a new flow without rule or affinity would take now, per family (for /status). */
  bestForNewFlows(family: Family): string | undefined {
    return bestForNewFlows(this.#monitor.current().interfaces, family, (i) => tierOf(this.placementOf(i).role));
  }

  /** The tier function for a destination: roles, and the first matching rule's via. */
  #tiers(dst: Destination, ip: string | undefined, port: number): { tier: (i: NetInterface) => number | undefined; rule?: Rule } {
    const rule = this.#rules.length ? firstMatch(this.#rules, { name: dst.isName ? dst.host : undefined, ip, port }) : undefined;
    const tier = (i: NetInterface) => {
      const p = this.placementOf(i);
      return tierOf(p.role, rule ? viaIndex(rule, i.name, p.type) : 0);
    };
    return { tier, rule };
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
    // roles and a rule matching the name (addresses are not known yet) pick the tier whose DNS
    // is asked; under a rule, its via interfaces need no default route (a VPN's own DNS)
    const { tier, rule } = this.#tiers(dst, undefined, dst.port);
    const allowed = new Set(
      bestTier(
        snap.interfaces.filter((i) => !i.loopback && i.up && i.carrier && (rule !== undefined || i.defaultRoutes.length > 0)),
        tier,
      ),
    );
    const bestTierNow = allowed.size ? tier([...allowed][0])! : Infinity;
    if (this.#mode === 'host') {
      const e = this.#affinity.get(dst.host.toLowerCase());
      if (e && (e.live > 0 || now - e.releasedAt <= this.#lingerMs)) {
        const iface = snap.interfaces.find((i) => i.name === e.ifname);
        // (an interface without a default route may hold affinity: allowed if its tier is as good)
        const t = iface && tier(iface);
        if (iface && iface.up && iface.carrier && t !== undefined && t <= bestTierNow) out.push(iface);
      }
    }
    const metricOf = (i: NetInterface, family: Family) => {
      let m = Infinity;
      for (const r of i.defaultRoutes) if (r.family === family && r.metric < m) m = r.metric;
      return m;
    };
    const ranked = snap.interfaces
      .filter((i) => allowed.has(i) && !out.includes(i))
      .map((i) => ({ i, v4: metricOf(i, 4), v6: metricOf(i, 6), off: this.#inBackoff(i.name, now) }))
      .sort((a, b) => Number(a.off) - Number(b.off) || a.v4 - b.v4 || a.v6 - b.v6);
    for (const r of ranked) out.push(r.i);
    return out;
  }

  candidates(target: Target, dst: Destination): Promise<Egress[]> {
    try {
      const c = this.choose(target, dst);
      return Array.isArray(c) ? Promise.resolve(c) : c;
    } catch (err) {
      // as an async function would: a failure is the promise's, never a throw
      return Promise.reject(err);
    }
  }

  choose(target: Target, dst: Destination): Egress[] | Promise<Egress[]> {
    // The kernel's choice first: it may re-read the monitor (a new interface or VPN the last
    // snapshot does not know yet), so the snapshot is taken after it. A cached route answers at
    // once: then there is no promise on the way.
    const choice = kernelChoice(target, this.#find, this.#monitor.current(), this.#reread);
    if ('kind' in choice) return this.#candidatesFor(choice, target, dst);
    return choice.then((c) => this.#candidatesFor(c, target, dst));
  }

  #candidatesFor(choice: RouteChoice, target: Target, dst: Destination): Egress[] {
    // SOURCE_UNLISTED: the kernel chose a source address that no usable interface lists (the monitor, like
    // getifaddrs, shows no addresses on a link without carrier): that interface cannot take the
    // flow, so go on to the others. Anything else is the kernel's own no: respect it.
    if (choice.kind === 'none' && choice.code !== SOURCE_UNLISTED) {
      // no route at all, or an unreachable/prohibit rule (a VPN kill switch): respect it
      throw new HoldfastError(
        choice.code === 'EHOSTUNREACH' || choice.code === 'EACCES' ? HfCode.HOST_UNREACHABLE : HfCode.NET_UNREACHABLE,
        choice.why,
        { cause: { code: choice.code } }, // EMFILE here means holdfast is out of fds, not of routes
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

    // the usable interfaces, the affinity's (with its address), then the order inside the best tier
    const aff = this.affinityOf(dst, target);
    const affIf = aff ? byName(aff.ifname) : undefined;
    const { tier: byRole, rule } = this.#tiers(dst, target.ip, target.port);
    // a destination on the kernel's interface's own subnet is reachable only there: no rule
    // matched, roles do not send it elsewhere (a never interface still takes nothing)
    const local = !rule && kernelIf && usable(kernelIf, family) && onLink(kernelIf, target.ip, family) ? kernelIf : undefined;
    const tier = (i: NetInterface) => {
      const t = byRole(i);
      return i === local && t !== undefined ? -1 : t;
    };
    const ordered = orderCandidates({
      usable: snap.interfaces.filter((i) => !i.loopback && usable(i, family)),
      family,
      kernel: kernelIf && usable(kernelIf, family) ? kernelIf : undefined,
      affinity: affIf && usable(affIf, family) && affIf.addresses.some((a) => a.ip === aff!.source) ? affIf : undefined,
      inBackoff: (name) => this.#inBackoff(name, now),
      tier,
      ruled: rule !== undefined,
    });
    const out: Egress[] = [];
    for (const { iface, placedBy } of ordered) {
      const src = placedBy === 'affinity' ? aff!.source : iface === kernelIf ? kernelSource : sourceFor(iface, target);
      if (src) out.push({ ifname: iface.name, source: src, family, placedBy });
    }

    if (out.length === 0) {
      if (choice.kind === 'none') throw new HoldfastError(HfCode.NET_UNREACHABLE, choice.why);
      if (snap.interfaces.some((i) => !i.loopback && usable(i, family))) {
        // usable interfaces there are, but roles (never) or the rule's via leave none of them
        throw new NoEgressError(
          `no interface may carry a flow to ${target.ip}:${target.port}: ` +
            (rule ? `rules.${rule.index} allows only ${rule.via.map((v) => (v.kind === 'type' ? v.type : v.pattern)).join(', ')}` : 'every usable interface has role never') +
            ' among the usable ones',
        );
      }
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
