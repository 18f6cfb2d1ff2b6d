// Windows: the per-user Internet Settings (WinINet: Edge, Chrome, most apps) through reg.exe, and
// with --winhttp the machine-wide WinHTTP proxy through netsh (services; needs an elevated shell).
// Running programs notice registry changes when they next read them (or after a restart).
import type { BypassRule } from '../pac.js';
import type { Backend, Cmd, CurrentProxy } from './proxy.js';
import { onPath, runOk } from './proxy.js';

export const INTERNET_SETTINGS = 'HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings';
const touched = ['ProxyEnable', 'ProxyServer', 'ProxyOverride', 'AutoConfigURL'] as const;

export interface RegValue {
  readonly type: string;
  readonly data: string;
}

export type WinHttpSaved = { readonly direct: true } | { readonly direct: false; readonly server: string; readonly bypass: string | null };

export interface WindowsSaved {
  /** value name -> value, null when it was absent */
  readonly values: Record<string, RegValue | null>;
  readonly winhttp?: WinHttpSaved;
}

/** `reg query KEY`: the values of the key itself. */
export function parseRegQuery(text: string): Map<string, RegValue> {
  const out = new Map<string, RegValue>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^ {4}(.+?) {4}(REG_\w+)(?: {4}(.*))?$/.exec(line);
    if (m) out.set(m[1], { type: m[2], data: m[3] ?? '' });
  }
  return out;
}

/** `netsh winhttp show proxy`. */
export function parseWinHttp(text: string): WinHttpSaved {
  const server = /Proxy Server\(s\)\s*:\s*(.*)$/m.exec(text)?.[1].trim();
  if (!server) return { direct: true };
  const bypass = /Bypass List\s*:\s*(.*)$/m.exec(text)?.[1].trim();
  return { direct: false, server, bypass: bypass && bypass !== '(none)' ? bypass : null };
}

/**
 * Bypass rules in WinINet's ProxyOverride spelling: names, "*.suffix", IPv4 ranges as octet
 * wildcards ("10.*", "172.16.*" ... "172.31.*"), "[::1]", and "<local>" for plain names. IPv6
 * ranges have no spelling there and are left out.
 */
export function proxyOverride(rules: readonly BypassRule[]): string[] {
  const out: string[] = [];
  const add = (s: string) => {
    if (!out.includes(s)) out.push(s);
  };
  for (const r of rules) {
    if (r.kind === 'plain') add('<local>');
    else if (r.kind === 'name') add(r.name);
    else if (r.kind === 'suffix') add(`*${r.suffix}`);
    else if (r.family === 6) {
      if (r.prefixLen === 128) add(`[${r.ip}]`);
    } else if (r.prefixLen === 32) add(r.ip);
    else {
      const octets = Math.ceil(r.prefixLen / 8);
      const count = 2 ** (octets * 8 - r.prefixLen);
      if (count > 256) continue;
      const base = r.ip.split('.').map(Number);
      for (let i = 0; i < count; i++) {
        const b = [...base];
        b[octets - 1] += i;
        add(octets === 0 ? '*' : `${b.slice(0, octets).join('.')}.*`);
      }
    }
  }
  return out;
}

const reg = (...args: string[]): Cmd => ({ argv: ['reg', ...args] });
const regAdd = (name: string, type: string, data: string): Cmd => reg('add', INTERNET_SETTINGS, '/v', name, '/t', type, '/d', data, '/f');
/** deleting a value that is not there fails: fine */
const regDelete = (name: string): Cmd => ({ ...reg('delete', INTERNET_SETTINGS, '/v', name, '/f'), optional: true });

function dwordData(d: string): string {
  return /^0x[0-9a-f]+$/i.test(d) ? String(parseInt(d, 16)) : d;
}

export const windowsBackend: Backend<WindowsSaved> = {
  desktop: 'windows',

  unavailable(ctx) {
    if (!onPath('reg', ctx.env)) return 'reg.exe not found (Windows only)';
    if (ctx.winhttp && !onPath('netsh', ctx.env)) return 'netsh not found (Windows only)';
    return undefined;
  },

  save(ctx) {
    const all = parseRegQuery(runOk(ctx.exec, ['reg', 'query', INTERNET_SETTINGS]));
    const values: Record<string, RegValue | null> = {};
    for (const k of touched) values[k] = all.get(k) ?? null;
    return ctx.winhttp ? { values, winhttp: parseWinHttp(runOk(ctx.exec, ['netsh', 'winhttp', 'show', 'proxy'])) } : { values };
  },

  on(ctx, t) {
    const hp = t.endpoint.host.includes(':') ? `[${t.endpoint.host}]:${t.endpoint.port}` : `${t.endpoint.host}:${t.endpoint.port}`;
    const override = proxyOverride(t.bypass).join(';');
    const cmds: Cmd[] =
      t.mode === 'pac'
        ? [regAdd('AutoConfigURL', 'REG_SZ', t.pacUrl), regAdd('ProxyEnable', 'REG_DWORD', '0')]
        : [regAdd('ProxyServer', 'REG_SZ', hp), regAdd('ProxyOverride', 'REG_SZ', override), regDelete('AutoConfigURL'), regAdd('ProxyEnable', 'REG_DWORD', '1')];
    if (ctx.winhttp) cmds.push({ argv: ['netsh', 'winhttp', 'set', 'proxy', `proxy-server=${hp}`, `bypass-list=${override}`] });
    return cmds;
  },

  restore(_ctx, saved) {
    const cmds: Cmd[] = [];
    for (const k of touched) {
      if (!(k in saved.values)) continue;
      const v = saved.values[k];
      cmds.push(v ? regAdd(k, v.type, v.type === 'REG_DWORD' ? dwordData(v.data) : v.data) : regDelete(k));
    }
    const w = saved.winhttp;
    if (w) {
      cmds.push({
        argv: w.direct
          ? ['netsh', 'winhttp', 'reset', 'proxy']
          : ['netsh', 'winhttp', 'set', 'proxy', `proxy-server=${w.server}`, ...(w.bypass ? [`bypass-list=${w.bypass}`] : [])],
      });
    }
    return cmds;
  },

  current(ctx) {
    const all = parseRegQuery(runOk(ctx.exec, ['reg', 'query', INTERNET_SETTINGS]));
    const pacUrl = all.get('AutoConfigURL')?.data;
    const enabled = dwordData(all.get('ProxyEnable')?.data ?? '0') !== '0';
    const server = all.get('ProxyServer')?.data;
    const bypass = (all.get('ProxyOverride')?.data ?? '').split(';').filter(Boolean);
    let c: CurrentProxy;
    if (pacUrl) c = { scope: 'windows', mode: 'pac', pacUrl, bypass };
    else if (enabled && server) {
      // "host:port" for all, or "http=host:port;https=...;socks=..."
      const per = new Map(server.split(';').map((p) => (p.includes('=') ? (p.split('=', 2) as [string, string]) : (['*', p] as [string, string]))));
      c = { scope: 'windows', mode: 'manual', http: per.get('http') ?? per.get('*'), https: per.get('https') ?? per.get('*'), socks: per.get('socks'), bypass };
    } else c = { scope: 'windows', mode: 'none', bypass };
    return [c];
  },
};
