// Destination rules: an ordered list; the first rule that matches a new flow limits the
// interfaces it may use to the rule's `via` (in order: its first entry with a usable interface
// wins; roles and the kernel's choice decide inside it). `to` entries: an address, a CIDR, an
// exact name, or `*.suffix` (names below suffix); names are matched as the client asked (SOCKS
// domain, Host or CONNECT authority), addresses after resolution. `ports` limits a rule to some
// destination ports. `via` entries: an interface name or glob, or a type (wifi, cellular, vpn,
// ethernet, other). Pure: compiled once per (re)load, matched per flow.
import { BlockList, isIP } from 'node:net';
import { interfaceTypes, type InterfaceType } from '../net/iftype.js';
import { globMatch } from './roles.js';

/** A rule as the config file gives it (after schema validation). */
export interface RuleSpec {
  readonly to: string | readonly string[];
  readonly ports?: number | string | readonly (number | string)[];
  readonly via: string | readonly string[];
}

export type ViaEntry = { readonly kind: 'type'; readonly type: InterfaceType } | { readonly kind: 'name'; readonly pattern: string };

export interface Rule {
  /** position in the config's list, for logs and /status */
  readonly index: number;
  readonly names: ReadonlySet<string>;
  readonly suffixes: readonly string[];
  readonly v4: BlockList | undefined;
  readonly v6: BlockList | undefined;
  /** inclusive ranges; undefined: any port */
  readonly ports: readonly (readonly [number, number])[] | undefined;
  readonly via: readonly ViaEntry[];
}

const nameRe = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/;

export type ToEntry =
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'suffix'; readonly suffix: string }
  | { readonly kind: 'net'; readonly ip: string; readonly prefix: number; readonly family: 4 | 6 };

/** One `to` entry, or why it can never match. */
export function parseToEntry(raw: string): ToEntry | { readonly error: string } {
  const s = raw.trim().toLowerCase();
  const slash = s.indexOf('/');
  const ipPart = slash < 0 ? s : s.slice(0, slash);
  const family = isIP(ipPart);
  if (family !== 0) {
    const max = family === 4 ? 32 : 128;
    if (slash < 0) return { kind: 'net', ip: ipPart, prefix: max, family: family as 4 | 6 };
    const len = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(len) || Number(len) > max) return { error: `"${raw}": a prefix length 0..${max} after the address` };
    return { kind: 'net', ip: ipPart, prefix: Number(len), family: family as 4 | 6 };
  }
  const name = s.replace(/\.$/, '');
  if (name.startsWith('*.')) {
    const suffix = name.slice(2);
    if (!nameRe.test(suffix)) return { error: `"${raw}": expected *. followed by a domain name` };
    return { kind: 'suffix', suffix };
  }
  if (!nameRe.test(name)) return { error: `"${raw}": expected an address, a CIDR like 10.0.0.0/8, a name or *.suffix` };
  return { kind: 'name', name };
}

/** One `ports` entry (443 or "8000-8100"), or why it can never match. */
export function parsePortEntry(raw: number | string): readonly [number, number] | { readonly error: string } {
  const s = String(raw).trim();
  const m = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(s);
  if (!m) return { error: `"${raw}": expected a port (443) or a range (8000-8100)` };
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || hi > 65535 || lo > hi) return { error: `"${raw}": ports are 1..65535, a range low-high` };
  return [lo, hi];
}

/** One `via` entry: a type, else an interface name or glob; or why it names nothing. */
export function parseViaEntry(raw: string): ViaEntry | { readonly error: string } {
  const s = raw.trim();
  if ((interfaceTypes as readonly string[]).includes(s)) return { kind: 'type', type: s as InterfaceType };
  if (s === '' || /[\s/]/.test(s) || s.length > 64) return { error: `"${raw}": expected an interface name or glob, or a type (${interfaceTypes.join(', ')})` };
  return { kind: 'name', pattern: s };
}

const list = <T>(v: T | readonly T[]): readonly T[] => (Array.isArray(v) ? (v as readonly T[]) : [v as T]);

/** Compile validated specs (the config schema checked each entry with the parsers above). */
export function compileRules(specs: readonly RuleSpec[]): Rule[] {
  return specs.map((spec, index) => {
    const names = new Set<string>();
    const suffixes: string[] = [];
    let v4: BlockList | undefined;
    let v6: BlockList | undefined;
    for (const raw of list(spec.to)) {
      const e = parseToEntry(raw);
      if ('error' in e) throw new Error(`rules.${index}.to: ${e.error}`);
      if (e.kind === 'name') names.add(e.name);
      else if (e.kind === 'suffix') suffixes.push(`.${e.suffix}`);
      else if (e.family === 4) (v4 ??= new BlockList()).addSubnet(e.ip, e.prefix, 'ipv4');
      else (v6 ??= new BlockList()).addSubnet(e.ip, e.prefix, 'ipv6');
    }
    const ports = spec.ports === undefined ? undefined : list(spec.ports).map((p) => {
      const r = parsePortEntry(p);
      if ('error' in r) throw new Error(`rules.${index}.ports: ${r.error}`);
      return r;
    });
    const via = list(spec.via).map((v) => {
      const r = parseViaEntry(v);
      if ('error' in r) throw new Error(`rules.${index}.via: ${r.error}`);
      return r;
    });
    return { index, names, suffixes, v4, v6, ports, via };
  });
}

/** What is known of a new flow's destination when a rule is asked. */
export interface RuleQuery {
  /** the name the client asked for (not an address literal), if any */
  readonly name?: string;
  /** the address, once resolved (or the literal the client gave) */
  readonly ip?: string;
  readonly port: number;
}

function matches(rule: Rule, q: RuleQuery): boolean {
  if (rule.ports && !rule.ports.some(([lo, hi]) => q.port >= lo && q.port <= hi)) return false;
  if (q.name !== undefined) {
    const n = q.name.toLowerCase().replace(/\.$/, '');
    if (rule.names.has(n)) return true;
    for (const s of rule.suffixes) if (n.endsWith(s)) return true;
  }
  if (q.ip !== undefined) {
    const f = isIP(q.ip);
    if (f === 4 && rule.v4?.check(q.ip, 'ipv4')) return true;
    if (f === 6 && rule.v6?.check(q.ip, 'ipv6')) return true;
  }
  return false;
}

/** The first rule that matches, if any. */
export function firstMatch(rules: readonly Rule[], q: RuleQuery): Rule | undefined {
  for (const r of rules) if (matches(r, q)) return r;
  return undefined;
}

/** The position of the first `via` entry that admits the interface; -1: none does. */
export function viaIndex(rule: Rule, ifname: string, type: InterfaceType): number {
  return rule.via.findIndex((v) => (v.kind === 'type' ? v.type === type : globMatch(v.pattern, ifname)));
}
