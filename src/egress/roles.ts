// Interface roles (DESIGN rule 7): which interfaces a new flow may use is the user's call.
// Each interface has a role, from the first of: `interfaces.<name>.role` (the exact name, else the
// first glob that matches), `metered.role` when it is metered, `types.<type>.role`, else normal.
// New flows use the usable interfaces of the best role present: prefer over normal; backup only
// when no prefer or normal interface is usable; never not at all. A destination rule's `via` list
// (src/egress/rules.ts) comes first: its first entry with a usable interface wins, roles order
// inside it. Among the chosen tier the kernel's choice, affinity and fallback work as before.
// Pure functions, plus a small book that holds the settings a reload replaces.
import { BlockList } from 'node:net';
import type { Family, NetInterface, PlacedBy } from '../contracts.js';
import type { InterfaceFactsCache, InterfaceType } from '../net/iftype.js';

export const roleNames = ['prefer', 'normal', 'backup', 'never'] as const;
export type Role = (typeof roleNames)[number];

const roleRank: Readonly<Record<Role, number>> = { prefer: 0, normal: 1, backup: 2, never: 3 };

/** Where an interface's role came from. */
export type RoleSource = 'interface' | 'metered' | 'type' | 'default';

/** What holdfast knows and decides about one interface: /status shows it. */
export interface Placement {
  readonly type: InterfaceType;
  readonly metered: boolean | null;
  readonly role: Role;
  readonly roleBy: RoleSource;
}

/** One `interfaces.<pattern>` entry of the config (its DNS is the resolver's business). */
export interface InterfaceSetting {
  readonly role?: Role;
  readonly metered?: boolean;
}

export interface RoleSettings {
  /** by name or glob, in config order */
  readonly interfaces: Readonly<Record<string, InterfaceSetting>>;
  readonly types: Readonly<Partial<Record<InterfaceType, { readonly role?: Role }>>>;
  readonly metered: { readonly role?: Role };
}

export function isGlob(pattern: string): boolean {
  return /[*?[]/.test(pattern);
}

const globCache = new Map<string, RegExp>();

/** Shell-style match of an interface name: `*` any run, `?` one character, `[a-z]` a class. */
export function globMatch(pattern: string, name: string): boolean {
  if (!isGlob(pattern)) return pattern === name;
  let re = globCache.get(pattern);
  if (!re) {
    let src = '';
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i];
      if (c === '*') src += '.*';
      else if (c === '?') src += '.';
      else if (c === '[') {
        const end = pattern.indexOf(']', i + 1);
        if (end < 0) src += '\\[';
        else {
          const body = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
          src += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
          i = end;
        }
      } else src += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
    }
    re = new RegExp(`^${src}$`);
    if (globCache.size > 1000) globCache.clear();
    globCache.set(pattern, re);
  }
  return re.test(name);
}

/** The first value of `key` among the entries for `name`: the exact name's, else the first matching glob's. */
function settingFor<K extends keyof InterfaceSetting>(
  entries: Readonly<Record<string, InterfaceSetting>>,
  name: string,
  key: K,
): InterfaceSetting[K] | undefined {
  const exact = Object.prototype.hasOwnProperty.call(entries, name) ? entries[name] : undefined;
  if (exact?.[key] !== undefined) return exact[key];
  for (const [pattern, e] of Object.entries(entries)) {
    if (e[key] !== undefined && isGlob(pattern) && globMatch(pattern, name)) return e[key];
  }
  return undefined;
}

/** An interface's metered state and role, given its type and NetworkManager's word. */
export function placementOf(
  name: string,
  type: InterfaceType,
  nmMetered: boolean | undefined,
  settings: RoleSettings,
): Placement {
  const metered = settingFor(settings.interfaces, name, 'metered') ?? nmMetered ?? null;
  const own = settingFor(settings.interfaces, name, 'role');
  if (own) return { type, metered, role: own, roleBy: 'interface' };
  if (metered === true && settings.metered.role) return { type, metered, role: settings.metered.role, roleBy: 'metered' };
  const byType = settings.types[type]?.role;
  if (byType) return { type, metered, role: byType, roleBy: 'type' };
  return { type, metered, role: 'normal', roleBy: 'default' };
}

/**
 * The tier of an interface for a new flow, lower is better; undefined: it may not take the flow.
 * `viaIndex` is the position of the rule's first `via` entry that admits it (0 without a rule,
 * -1 when the rule admits it nowhere).
 */
export function tierOf(role: Role, viaIndex = 0): number | undefined {
  if (role === 'never' || viaIndex < 0) return undefined;
  return viaIndex * 3 + roleRank[role];
}

/**
 * Is `ip` on a subnet of `iface` (a phone tether's own web page, a printer on the LAN)? Only that
 * interface reaches it, so roles do not send such a flow elsewhere (never still refuses it).
 */
export function onLink(iface: NetInterface, ip: string, family: Family): boolean {
  for (const a of iface.addresses) {
    if (a.family !== family || a.ip.includes('%')) continue;
    if (subnetOf(a.ip, a.prefixLen, family)?.check(ip, family === 6 ? 'ipv6' : 'ipv4')) return true;
  }
  return false;
}

const subnets = new Map<string, BlockList | null>();

/** A BlockList holding one interface subnet, made once per address. */
function subnetOf(ip: string, prefixLen: number, family: Family): BlockList | null {
  const key = `${ip}/${prefixLen}`;
  let list = subnets.get(key);
  if (list === undefined) {
    list = new BlockList();
    try {
      list.addSubnet(ip, prefixLen, family === 6 ? 'ipv6' : 'ipv4');
    } catch {
      list = null; // an address BlockList does not take
    }
    if (subnets.size > 1024) subnets.clear();
    subnets.set(key, list);
  }
  return list;
}

/** The items of the best (lowest) tier present, in their given order. */
export function bestTier<T>(items: readonly T[], tier: (item: T) => number | undefined): T[] {
  let best = Infinity;
  const tiers = items.map((i) => {
    const t = tier(i);
    if (t !== undefined && t < best) best = t;
    return t;
  });
  return items.filter((_, k) => tiers[k] === best);
}

function metricOf(i: NetInterface, family: Family): number {
  let m = Infinity;
  for (const r of i.defaultRoutes) if (r.family === family && r.metric < m) m = r.metric;
  return m;
}

/**
 * Where a new flow with no rule and no affinity would go now, per family (for /status): the
 * usable interface with a default route of the best role, lowest metric first (the kernel's
 * order among them, short of asking it per destination).
 */
export function bestForNewFlows(
  interfaces: readonly NetInterface[],
  family: Family,
  tier: (iface: NetInterface) => number | undefined,
): string | undefined {
  const routed = interfaces.filter(
    (i) => !i.loopback && i.up && i.carrier && i.addresses.some((a) => a.family === family) && metricOf(i, family) !== Infinity,
  );
  let best: NetInterface | undefined;
  for (const i of bestTier(routed, tier)) if (!best || metricOf(i, family) < metricOf(best, family)) best = i;
  return best?.name;
}

export interface OrderInput {
  /** the usable interfaces that may take the flow (up, carrier, an address of the family) */
  readonly usable: readonly NetInterface[];
  readonly family: Family;
  /** the kernel's choice, if usable */
  readonly kernel?: NetInterface;
  /** the interface the destination's live (or lingering) flows use, if usable */
  readonly affinity?: NetInterface;
  readonly inBackoff: (ifname: string) => boolean;
  /** the tier of each interface (roles, and the rule's via), undefined: not allowed */
  readonly tier: (iface: NetInterface) => number | undefined;
  /**
   * A destination rule matched: it says why the kernel's choice was passed over, and the
   * interfaces its via admits may take the flow without a default route.
   */
  readonly ruled: boolean;
}

export interface Ordered {
  readonly iface: NetInterface;
  readonly placedBy: PlacedBy;
}

/**
 * The interfaces to try for a new flow, best first, all of the best tier present: the affinity's,
 * the kernel's choice (unless in back-off), the others with a default route of the family by
 * metric (not in back-off); if back-off left nothing, the kernel's choice anyway (else the
 * tier's interfaces). Empty: nowhere to go (every usable interface is `never`, or outside the rule's via).
 */
export function orderCandidates(input: OrderInput): Ordered[] {
  const { family, kernel, affinity } = input;
  // eligible: the kernel's choice and the affinity's as they are, and under a rule every interface
  // its via names (a VPN with only its own routes: the user said so); others need a default route
  const routed = (i: NetInterface) => input.ruled || metricOf(i, family) !== Infinity;
  const eligible = input.usable.filter((i) => i === kernel || i === affinity || routed(i));
  const tier = bestTier(eligible, input.tier);
  if (tier.length === 0) return [];
  const inTier = (i: NetInterface | undefined): i is NetInterface => i !== undefined && tier.includes(i);
  const out: Ordered[] = [];
  const push = (i: NetInterface, placedBy: PlacedBy) => {
    if (!out.some((o) => o.iface === i)) out.push({ iface: i, placedBy });
  };
  /** the first when the kernel's choice was passed over: by a rule, a role, or (unusable) fallback */
  const passedOver = (): PlacedBy => (!kernel || inTier(kernel) ? 'fallback' : input.ruled ? 'rule' : 'role');
  if (inTier(affinity)) push(affinity, 'affinity');
  if (inTier(kernel) && !input.inBackoff(kernel.name)) push(kernel, out.length ? 'fallback' : 'route');
  const byMetric = (a: NetInterface, b: NetInterface) => {
    const x = metricOf(a, family);
    const y = metricOf(b, family);
    return x === y ? 0 : x < y ? -1 : 1;
  };
  const rest = tier.filter((i) => i !== kernel && i !== affinity && routed(i) && !input.inBackoff(i.name)).sort(byMetric);
  for (const i of rest) push(i, out.length ? 'fallback' : passedOver());
  if (out.length === 0) {
    // every interface of the tier is in back-off: the kernel's choice anyway, else the tier's
    if (inTier(kernel)) push(kernel, 'route');
    else for (const i of tier.slice().sort(byMetric)) push(i, out.length ? 'fallback' : passedOver());
  }
  return out;
}

/** The settings a reload replaces, and each interface's placement from them and the facts. */
export class RoleBook {
  #settings: RoleSettings;
  readonly #facts: Pick<InterfaceFactsCache, 'typeOf' | 'nmMetered'> & { readonly version?: number };
  /** per "name index": the placement, valid while the settings and the facts' version hold */
  readonly #cache = new Map<string, Placement>();
  #cachedVersion: number | undefined;

  constructor(settings: RoleSettings, facts: Pick<InterfaceFactsCache, 'typeOf' | 'nmMetered'> & { readonly version?: number }) {
    this.#settings = settings;
    this.#facts = facts;
  }

  configure(settings: RoleSettings): void {
    this.#settings = settings;
    this.#cache.clear();
  }

  placementOf(iface: Pick<NetInterface, 'name' | 'index'>): Placement {
    // facts without a version (tests' fakes) are asked every time
    const version = this.#facts.version;
    if (version === undefined) return placementOf(iface.name, this.#facts.typeOf(iface), this.#facts.nmMetered(iface.name), this.#settings);
    if (version !== this.#cachedVersion) {
      this.#cache.clear();
      this.#cachedVersion = version;
    }
    const key = `${iface.name} ${iface.index}`;
    let p = this.#cache.get(key);
    if (!p) {
      p = placementOf(iface.name, this.#facts.typeOf(iface), this.#facts.nmMetered(iface.name), this.#settings);
      if (this.#cache.size > 1024) this.#cache.clear();
      this.#cache.set(key, p);
    }
    return p;
  }
}
