// Who may reach holdfast: the open-proxy check on the listeners (by their text at start and on
// reload, and by the addresses they were really bound to) and the client allow-list.
import { BlockList, isIP } from 'node:net';
import { ConfigError, formatHostPort, type Config } from './config.js';
import type { Listener } from './inbound/listen.js';
import { isLoopbackIp, unmap } from './net/addr.js';

export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/** An address in one text form: IPv6 compressed and lower-case, IPv4-mapped IPv6 as IPv4. */
export function canonicalIp(host: string): string {
  if (isIP(host) !== 6) return host.toLowerCase();
  let c: string;
  try {
    c = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase(); // a zone id (fe80::1%eth0)
  }
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(c);
  if (!m) return c;
  const hi = parseInt(m[1], 16);
  const lo = parseInt(m[2], 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * A listen entry that is an address (not a name) other than loopback. Names are judged by the
 * addresses they were bound to (checkBoundExposure): "127.lan.example" may well be a LAN address.
 */
export function isExposedLiteral(host: string): boolean {
  return isIP(host) !== 0 && !isLoopbackIp(canonicalIp(host));
}

export function openProxyError(shown: readonly string[]): ConfigError {
  return new ConfigError(
    `listen: ${shown.join(', ')} is reachable from other hosts, ` +
      'and no auth.users are set: that would be an open proxy. Add auth users, or set allowUnauthenticated: true ' +
      '(and restrict `clients`) if you really mean it.',
  );
}

/** Refuse to expose an open proxy: a non-loopback listener needs auth or an explicit opt-out. */
export function checkExposure(cfg: Config, hasUsers: boolean): void {
  if (hasUsers || cfg.allowUnauthenticated) return;
  const exposed = cfg.listen.filter((l) => isExposedLiteral(l.host));
  if (exposed.length) throw openProxyError(exposed.map((l) => formatHostPort(l.host, l.port)));
}

/** The same, on the addresses the listeners were really bound to (after name resolution). */
export function checkBoundExposure(cfg: Config, hasUsers: boolean, bound: readonly Listener[]): void {
  if (hasUsers || cfg.allowUnauthenticated) return;
  const exposed = bound.filter((l) => !isLoopbackIp(canonicalIp(l.bound().host)));
  if (exposed.length) {
    throw openProxyError(
      exposed.map((l) => {
        const b = l.bound();
        const shown = formatHostPort(l.address.host, l.address.port);
        return l.address.host === b.host ? shown : `${shown} (bound to ${formatHostPort(b.host, b.port)})`;
      }),
    );
  }
}

/** The client allow-list as a function; empty list: everyone. */
export function clientFilter(cidrs: readonly string[]): (ip: string) => boolean {
  if (cidrs.length === 0) return () => true;
  const list = new BlockList();
  for (const c of cidrs) {
    const [ip, len] = c.split('/');
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (len === undefined) list.addAddress(ip, type);
    else list.addSubnet(ip, Number(len), type);
  }
  return (ip) => {
    const v4 = unmap(ip);
    if (v4 !== ip) return list.check(v4, 'ipv4');
    return list.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4');
  };
}
