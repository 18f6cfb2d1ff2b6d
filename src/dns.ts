// Name resolution for flows. The dialer takes addresses only; this turns the client's name into
// targets, in the order to try them (IPv6 and IPv4 interleaved, IPv6 first: RFC 8305 section 4).
// A name is resolved with the DNS servers of the interface that will carry the flow (config
// `interfaces.<name>.dns`, else systemd-resolved's per-link servers, else the system resolver),
// queries sent from that interface's address, answers cached per interface for their TTL. When
// those servers stay silent or fail, the next interface's are asked too (fallback.delay apart).
// Address literals never touch a resolver.
import { execFile } from 'node:child_process';
import { Resolver as DnsResolver } from 'node:dns/promises';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Destination, Family, NetInterface, Target } from './contracts.js';
import { RaceLost, staggeredRace } from './egress/race.js';
import { DnsError, HoldfastError } from './errors.js';
import { guardLookup, type LookupFn } from './resolver-guard.js';

/** The interface whose DNS servers resolve a name, and its addresses to send queries from. */
export interface ResolveVia {
  readonly iface: NetInterface;
  /**
   * Interfaces to ask next, in order (fallback, DESIGN rule 6): the next one's servers are asked
   * when the previous ones failed for a reason that blames the path (no answer, refused,
   * SERVFAIL), or have not answered after `fallbackDelayMs`; the first answer wins. Interfaces
   * without servers of their own (the system resolver) are not raced.
   */
  readonly fallbacks?: readonly NetInterface[];
  readonly fallbackDelayMs?: number;
  /** An interface's servers failed that way, or were still silent when another's answered. */
  readonly onFailed?: (iface: NetInterface, err: unknown) => void;
}

export interface Resolver {
  /** All addresses for dst, in the order to try them. Literal addresses resolve to themselves. */
  resolve(dst: Destination, via?: ResolveVia): Promise<Target[]>;
  /**
   * The answer when it needs no lookup (an address literal: itself), else undefined. Optional: a
   * resolver without it is always asked through `resolve`.
   */
  resolveNow?(dst: Destination): Target[] | undefined;
}

export function literalTarget(host: string, port: number): Target | undefined {
  const f = isIP(host);
  if (f === 0) return undefined;
  return { ip: host, family: f as Family, port };
}

/** Interleave families, keeping each family's order, starting with IPv6. */
export function interleave(targets: readonly Target[]): Target[] {
  const v6 = targets.filter((t) => t.family === 6);
  const v4 = targets.filter((t) => t.family === 4);
  const out: Target[] = [];
  for (let i = 0; i < Math.max(v6.length, v4.length); i++) {
    if (i < v6.length) out.push(v6[i]);
    if (i < v4.length) out.push(v4[i]);
  }
  return out;
}

/** c-ares codes that blame the server or the path to it, not the name: worth asking elsewhere. */
const PATH_CODES = new Set(['ETIMEOUT', 'ECONNREFUSED', 'ESERVFAIL', 'EREFUSED']);

/** A resolution failure that another interface's DNS servers might not have. */
export function dnsBlamesPath(err: unknown): boolean {
  const cause = err instanceof DnsError ? (err as { cause?: unknown }).cause : err;
  return PATH_CODES.has((cause as { code?: string } | undefined)?.code ?? '');
}

function dnsError(host: string, err: unknown): DnsError {
  return new DnsError(`resolve ${host}: ${(err as NodeJS.ErrnoException).code ?? 'failed'}`, err);
}

async function systemLookupOf(dst: Destination, lookup: LookupFn): Promise<Target[]> {
  let addrs: { address: string; family: number }[];
  try {
    addrs = await lookup(dst.host);
  } catch (err) {
    if (err instanceof HoldfastError) throw err; // HF_DNS_TIMEOUT from the guard
    throw dnsError(dst.host, err);
  }
  if (addrs.length === 0) throw new DnsError(`resolve ${dst.host}: no addresses`);
  return interleave(addrs.map((a) => ({ ip: a.address, family: a.family as Family, port: dst.port })));
}

/** systemd-resolved's DNS servers for one link, via `resolvectl dns IFNAME` (empty if none). */
function resolvedServers(ifname: string): Promise<string[]> {
  if (!existsSync('/run/systemd/resolve')) return Promise.resolve([]);
  return new Promise((resolve) => {
    execFile('resolvectl', ['dns', ifname], { timeout: 2000 }, (err, stdout) => {
      if (err) return resolve([]);
      // "Link 2 (eth0): 192.168.1.1 fd00::1"
      const after = stdout.slice(stdout.indexOf(':') + 1);
      resolve(after.split(/\s+/).filter((s) => isIP(s.split('%')[0]) !== 0));
    });
  });
}

export interface ResolverOptions {
  /** configured DNS servers per interface name */
  readonly perInterface?: Readonly<Record<string, readonly string[]>>;
  /** ask systemd-resolved for per-link servers of interfaces without configured ones */
  readonly systemdResolved?: boolean;
  readonly timeoutMs?: number;
  readonly cacheEntries?: number;
  /** answers are cached for their TTL, clamped to [minTtlMs, maxTtlMs] */
  readonly minTtlMs?: number;
  readonly maxTtlMs?: number;
  /**
   * The system resolver's lookups (getaddrinfo): each answers or fails with HF_DNS_TIMEOUT in
   * `timeoutMs` (read per lookup: dns.timeout, reloadable), at most half the thread pool runs
   * them, and /etc/hosts names are answered from the file (src/resolver-guard.ts).
   */
  readonly system?: { readonly settings: { readonly timeoutMs: number }; readonly lookup?: LookupFn; readonly hostsFile?: string };
}

/**
 * The resolver: per-interface DNS where servers are known, the system resolver otherwise.
 */
export function createResolver(opts: ResolverOptions = {}): Resolver {
  const perInterface = opts.perInterface ?? {};
  const minTtl = opts.minTtlMs ?? 1000;
  const maxTtl = opts.maxTtlMs ?? 300_000;
  const cache = new LRUCache<string, Target[]>({ max: opts.cacheEntries ?? 5000 });
  const guarded = guardLookup(opts.system ?? { settings: { timeoutMs: 5000 } });
  const systemLookup = (dst: Destination) => systemLookupOf(dst, guarded);
  /** per interface: its servers (looked up once per address set) and a Resolver bound to them */
  const resolvers = new Map<string, { key: string; servers: Promise<string[]>; r?: DnsResolver }>();

  function serversOf(iface: NetInterface): Promise<string[]> {
    const key = iface.addresses.map((a) => a.ip).join(',');
    const hit = resolvers.get(iface.name);
    if (hit && hit.key === key) return hit.servers;
    const configured = perInterface[iface.name];
    const servers = configured
      ? Promise.resolve([...configured])
      : opts.systemdResolved === false
        ? Promise.resolve([])
        : resolvedServers(iface.name);
    resolvers.set(iface.name, { key, servers });
    return servers;
  }

  function resolverOf(iface: NetInterface, servers: string[]): DnsResolver {
    const entry = resolvers.get(iface.name)!;
    if (entry.r) return entry.r;
    const r = new DnsResolver({ timeout: opts.timeoutMs ?? 2000, tries: 2 });
    r.setServers(servers);
    const v4 = iface.addresses.find((a) => a.family === 4)?.ip;
    const v6 = iface.addresses.find((a) => a.family === 6 && !a.ip.includes('%'))?.ip;
    // queries leave from this interface's addresses (an on-link server is then reached through it)
    r.setLocalAddress(v4 ?? '0.0.0.0', v6 ?? '::0');
    entry.r = r;
    return r;
  }

  async function viaInterface(dst: Destination, iface: NetInterface, servers: string[]): Promise<Target[]> {
    const key = `${iface.name}|${dst.host.toLowerCase()}`;
    const cached = cache.get(key);
    if (cached) return cached.map((t) => ({ ...t, port: dst.port }));
    const r = resolverOf(iface, servers);
    const [a6, a4] = await Promise.allSettled([
      iface.addresses.some((a) => a.family === 6) ? r.resolve6(dst.host, { ttl: true }) : Promise.resolve([]),
      r.resolve4(dst.host, { ttl: true }),
    ]);
    const out: Target[] = [];
    let ttl = maxTtl;
    for (const [res, family] of [[a6, 6], [a4, 4]] as const) {
      if (res.status !== 'fulfilled') continue;
      for (const rec of res.value) {
        out.push({ ip: rec.address, family, port: dst.port });
        ttl = Math.min(ttl, rec.ttl * 1000);
      }
    }
    if (out.length === 0) {
      const err = a4.status === 'rejected' ? a4.reason : a6.status === 'rejected' ? a6.reason : undefined;
      throw err ? dnsError(dst.host, err) : new DnsError(`resolve ${dst.host}: no addresses`);
    }
    const targets = interleave(out);
    cache.set(key, targets, { ttl: Math.max(minTtl, ttl) });
    return targets;
  }

  async function resolveName(dst: Destination, via: ResolveVia | undefined): Promise<Target[]> {
    if (!via) return systemLookup(dst);
    const servers = await serversOf(via.iface);
    if (!servers.length) return systemLookup(dst);
    if (!via.fallbacks?.length) return viaInterface(dst, via.iface, servers);
    // the interfaces with servers of their own (others would ask the same system resolver)
    const ways: { iface: NetInterface; servers: string[] }[] = [{ iface: via.iface, servers }];
    for (const iface of via.fallbacks) {
      if (ways.some((w) => w.iface.name === iface.name)) continue;
      const s = await serversOf(iface);
      if (s.length) ways.push({ iface, servers: s });
    }
    if (ways.length === 1) return viaInterface(dst, via.iface, servers);
    try {
      const win = await staggeredRace(ways, (w) => viaInterface(dst, w.iface, w.servers), {
        delayMs: via.fallbackDelayMs ?? 300,
        goOn: dnsBlamesPath,
        onFailed: (w, err) => {
          if (dnsBlamesPath(err)) via.onFailed?.(w.iface, err);
        },
        onStalled: (w, winner) =>
          via.onFailed?.(w.iface, new DnsError(`resolve ${dst.host} via ${w.iface.name}: no answer before ${winner.iface.name}'s`)),
        dispose: () => {}, // a late answer is cached, nothing to close
      });
      return win.value;
    } catch (err) {
      if (!(err instanceof RaceLost)) throw err;
      const lost = err as RaceLost<unknown>;
      throw lost.failures.find((f) => !dnsBlamesPath(f.err))?.err ?? lost.last;
    }
  }

  /** An address needs no lookup: itself (most flows name one). */
  function resolveNow(dst: Destination): Target[] | undefined {
    const lit = literalTarget(dst.host, dst.port);
    return lit ? [lit] : undefined;
  }

  return {
    resolve(dst, via) {
      // no async function's frame for an address
      const now = resolveNow(dst);
      return now ? Promise.resolve(now) : resolveName(dst, via);
    },
    resolveNow,
  };
}

/** The system resolver only (getaddrinfo), as the host would resolve. */
export function createSystemResolver(): Resolver {
  return createResolver({ systemdResolved: false });
}
