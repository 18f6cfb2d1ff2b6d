// The PAC file, rendered from the template pac/proxy.pac: served at GET /proxy.pac on each
// listener (pointing at the address the request came in on) and printed by `holdfast pac`.
// The bypass list (config `pac.bypass`, plus the listener itself) is parsed here once; `holdfast
// env` and `holdfast system-proxy` reuse the parsed form in their own spellings.
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { formatHostPort, type ListenAddress } from './config.js';
import { unmap } from './net/addr.js';

export const pacContentType = 'application/x-ns-proxy-autoconfig';
export const pacTemplatePath = new URL('../../pac/proxy.pac', import.meta.url);

/** Where clients reach holdfast: a listener's address, with a wildcard replaced by loopback. */
export interface ProxyEndpoint {
  readonly host: string;
  readonly port: number;
}

export type BypassRule =
  /** names without a dot ("<local>") */
  | { readonly kind: 'plain' }
  /** exactly this name (lower case) */
  | { readonly kind: 'name'; readonly name: string }
  /** any name ending with ".suffix"; `suffix` keeps its leading dot */
  | { readonly kind: 'suffix'; readonly suffix: string }
  /** an address range; a single address has prefixLen 32 or 128 */
  | { readonly kind: 'net'; readonly family: 4 | 6; readonly ip: string; readonly prefixLen: number };

/** The address clients should use for a listener: 0.0.0.0 and :: become loopback. */
export function clientEndpoint(l: ListenAddress): ProxyEndpoint {
  let host = l.host;
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return { host: unmap(host), port: l.port };
}

/** "host:port" for URLs and PAC entries (IPv6 in brackets). */
export function endpointText(p: ProxyEndpoint): string {
  return formatHostPort(p.host, p.port);
}

/**
 * Parse bypass entries (already validated by the config schema) into rules, the listener's own
 * address last. Duplicates are dropped. Throws on an entry the schema would have refused.
 */
export function parseBypass(entries: readonly string[], listener?: ProxyEndpoint): BypassRule[] {
  const out: BypassRule[] = [];
  const seen = new Set<string>();
  const add = (r: BypassRule) => {
    const key = JSON.stringify(r);
    if (seen.has(key)) return;
    seen.add(key);
    out.push(r);
  };
  for (const raw of entries) {
    const e = raw.trim();
    if (e === '<local>') {
      add({ kind: 'plain' });
      continue;
    }
    const [ip, len] = e.split('/');
    const f = isIP(ip.split('%')[0]);
    if (f !== 0) {
      const max = f === 4 ? 32 : 128;
      const prefixLen = len === undefined ? max : Number(len);
      if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > max) throw new Error(`bypass entry "${raw}": bad prefix length`);
      add({ kind: 'net', family: f as 4 | 6, ip: networkOf(ip.split('%')[0], f as 4 | 6, prefixLen), prefixLen });
      continue;
    }
    if (len !== undefined) throw new Error(`bypass entry "${raw}": a prefix length needs an address`);
    let name = e.toLowerCase();
    if (name.endsWith('.') && name.length > 1) name = name.slice(0, -1);
    if (name.startsWith('*.')) add({ kind: 'suffix', suffix: name.slice(1) });
    else if (name.startsWith('.')) add({ kind: 'suffix', suffix: name });
    else if (/^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/.test(name)) add({ kind: 'name', name });
    else throw new Error(`bypass entry "${raw}": not a name, *.suffix, address or CIDR`);
  }
  // the listener itself, unless a rule covers it already
  if (listener) {
    const f = isIP(listener.host);
    if (f === 0) add({ kind: 'name', name: listener.host.toLowerCase() });
    else if (!out.some((r) => r.kind === 'net' && inRule(listener.host, r)))
      add({ kind: 'net', family: f as 4 | 6, ip: networkOf(listener.host, f as 4 | 6, f === 4 ? 32 : 128), prefixLen: f === 4 ? 32 : 128 });
  }
  return out;
}

// ---- address arithmetic (no dependency; these run once per render) ----------------------------

/** IPv4 as 4 bytes or IPv6 as 16 bytes. */
export function ipBytes(ip: string): number[] {
  if (isIP(ip) === 4) return ip.split('.').map(Number);
  let s = ip;
  let tail: number[] = [];
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (m) {
    tail = m[2].split('.').map(Number);
    s = m[1].endsWith('::') ? m[1] : m[1].slice(0, -1);
  }
  const [a, b] = s.split('::');
  const head = a ? a.split(':') : [];
  const rest = b !== undefined && b !== '' ? b.split(':') : [];
  const groups = 8 - tail.length / 2;
  const fill = b === undefined ? 0 : groups - head.length - rest.length;
  const parts = [...head, ...Array<string>(fill).fill('0'), ...rest];
  const out: number[] = [];
  for (const p of parts) {
    const n = parseInt(p, 16);
    out.push(n >> 8, n & 255);
  }
  return [...out, ...tail];
}

function bytesToIp(b: number[]): string {
  if (b.length === 4) return b.join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // the longest run of zero groups (2 or more) becomes "::"
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** The network address of ip/prefixLen (host bits cleared). */
export function networkOf(ip: string, family: 4 | 6, prefixLen: number): string {
  const b = ipBytes(ip);
  for (let i = 0; i < b.length; i++) {
    const bits = Math.max(0, Math.min(8, prefixLen - i * 8));
    b[i] &= (0xff << (8 - bits)) & 0xff;
  }
  if (b.length !== (family === 4 ? 4 : 16)) throw new Error(`${ip} is not an IPv${family} address`);
  return bytesToIp(b);
}

/** True if ip lies in rule (same family). */
export function inRule(ip: string, rule: Extract<BypassRule, { kind: 'net' }>): boolean {
  if (isIP(ip) !== rule.family) return false;
  return networkOf(ip, rule.family, rule.prefixLen) === rule.ip;
}

function maskOf(prefixLen: number): string {
  const b = [0, 0, 0, 0];
  for (let i = 0; i < 4; i++) b[i] = (0xff << (8 - Math.max(0, Math.min(8, prefixLen - i * 8)))) & 0xff;
  return b.join('.');
}

function ipv6Groups(ip: string): number[] {
  const b = ipBytes(ip);
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i] << 8) | b[i + 1]);
  return g;
}

// ---- rendering ------------------------------------------------------------------------------

export interface PacOptions {
  /** where the PAC sends traffic */
  readonly proxy: ProxyEndpoint;
  /** config `pac.bypass` */
  readonly bypass: readonly string[];
  /** config `pac.direct`: DIRECT as the last resort */
  readonly direct: boolean;
}

/** The PAC result string for proxied hosts: "PROXY h:p; SOCKS5 h:p[; DIRECT]". */
export function proxyDirective(proxy: ProxyEndpoint, direct: boolean): string {
  const hp = endpointText(proxy);
  return `PROXY ${hp}; SOCKS5 ${hp}${direct ? '; DIRECT' : ''}`;
}

let cachedTemplate: string | undefined;

/** The template text (read once). */
export function pacTemplate(): string {
  cachedTemplate ??= readFileSync(pacTemplatePath, 'utf8');
  return cachedTemplate;
}

const slotRe = /\/\*@(\w+)\*\/ [^;\n]*;/g;

/** Render the PAC file for one listener. */
export function renderPac(opts: PacOptions, template: string = pacTemplate()): string {
  const rules = parseBypass(opts.bypass, opts.proxy);
  const values: Record<string, unknown> = {
    proxy: proxyDirective(opts.proxy, opts.direct),
    plain: rules.some((r) => r.kind === 'plain'),
    names: rules.flatMap((r) => (r.kind === 'name' ? [r.name] : [])),
    suffixes: rules.flatMap((r) => (r.kind === 'suffix' ? [r.suffix] : [])),
    nets4: rules.flatMap((r) => (r.kind === 'net' && r.family === 4 ? [[r.ip, maskOf(r.prefixLen)]] : [])),
    nets6: rules.flatMap((r) => (r.kind === 'net' && r.family === 6 ? [[ipv6Groups(r.ip), r.prefixLen]] : [])),
  };
  const used = new Set<string>();
  const text = template.replace(slotRe, (_m, name: string) => {
    if (!(name in values)) throw new Error(`pac template: unknown slot /*@${name}*/`);
    if (used.has(name)) throw new Error(`pac template: slot /*@${name}*/ appears twice`);
    used.add(name);
    return `${JSON.stringify(values[name])};`;
  });
  const missing = Object.keys(values).filter((k) => !used.has(k));
  if (missing.length) throw new Error(`pac template: missing slot(s) ${missing.map((k) => `/*@${k}*/`).join(', ')}`);
  return text;
}

// ---- no_proxy -------------------------------------------------------------------------------

/**
 * The bypass list as a no_proxy value, in the comma form curl (7.86+: CIDR too) and undici's
 * EnvHttpProxyAgent understand: names, ".suffix", addresses and CIDR. Tools without CIDR support
 * still skip the usual loopback: 127.0.0.1 and [::1] are listed on their own as well.
 */
export function noProxyList(bypass: readonly string[], listener?: ProxyEndpoint): string {
  const out: string[] = [];
  const add = (s: string) => {
    if (!out.includes(s)) out.push(s);
  };
  for (const r of parseBypass(bypass, listener)) {
    switch (r.kind) {
      case 'plain':
        break; // no portable spelling
      case 'name':
        add(r.name);
        break;
      case 'suffix':
        add(r.suffix);
        break;
      case 'net': {
        const single = r.prefixLen === (r.family === 4 ? 32 : 128);
        add(single ? r.ip : `${r.ip}/${r.prefixLen}`);
        if (r.family === 4 && !single && inRule('127.0.0.1', r)) add('127.0.0.1');
        if (r.family === 6 && inRule('::1', r)) {
          add('::1');
          add('[::1]'); // undici compares the URL's host, brackets included
        }
        break;
      }
    }
  }
  return out.join(',');
}

// ---- GET /proxy.pac ---------------------------------------------------------------------------

/**
 * The handler for GET /proxy.pac on a listener: the PAC points at the address and port the
 * request came in on (so a listener on 0.0.0.0 hands LAN clients its LAN address). Rendered per
 * request (the template is read once); a PAC is fetched rarely.
 */
export function createPacHandler(pac: { readonly bypass: readonly string[]; readonly direct: boolean }) {
  pacTemplate(); // fail at start, not at the first request, if the template is missing
  return (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('holdfast: /proxy.pac answers GET\n');
      return;
    }
    const host = unmap(req.socket.localAddress ?? '127.0.0.1');
    const port = req.socket.localPort ?? 0;
    const body = renderPac({ proxy: { host, port }, bypass: pac.bypass, direct: pac.direct });
    res.writeHead(200, {
      'content-type': pacContentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}
