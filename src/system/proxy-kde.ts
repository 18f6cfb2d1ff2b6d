// KDE Plasma: [Proxy Settings] in kioslaverc, written with kwriteconfig5/kwriteconfig6 (KDE's own
// INI escaping), read back from the file itself so that a key that was absent is restored as
// absent (--delete). Running KDE programs re-read it on a D-Bus signal.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Backend, Cmd, CurrentProxy } from './proxy.js';
import { bypassPatterns, onPath } from './proxy.js';

const GROUP = 'Proxy Settings';
/** Every key `on` may set; ProxyType goes last on the way in and first on the way out. */
const touched = ['ProxyType', 'httpProxy', 'httpsProxy', 'socksProxy', 'NoProxyFor', 'ReversedException', 'Proxy Config Script'] as const;

export interface KdeSaved {
  readonly tool: string;
  /** key -> value, null when the key was absent */
  readonly values: Record<string, string | null>;
}

/** kwriteconfig6 for Plasma 6, kwriteconfig5 for Plasma 5 (by KDE_SESSION_VERSION, else what is installed). */
export function kdeTool(env: NodeJS.ProcessEnv): string {
  if (env.KDE_SESSION_VERSION === '5') return 'kwriteconfig5';
  if (env.KDE_SESSION_VERSION === '6') return 'kwriteconfig6';
  if (onPath('kwriteconfig6', env)) return 'kwriteconfig6';
  if (onPath('kwriteconfig5', env)) return 'kwriteconfig5';
  return 'kwriteconfig6';
}

export function kioslavercPath(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'kioslaverc');
}

/** KConfig's value escapes: \s \t \n \r \\ \xNN. */
function unescapeKConfig(v: string): string {
  return v.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_m, c: string) => {
    if (c.length === 3) return String.fromCharCode(parseInt(c.slice(1), 16));
    return ({ s: ' ', t: '\t', n: '\n', r: '\r', '\\': '\\' } as Record<string, string>)[c] ?? c;
  });
}

/** The keys of one group of a KConfig INI file (localized and $-flagged variants ignored). */
export function readKConfigGroup(text: string, group: string): Map<string, string> {
  const out = new Map<string, string>();
  let inGroup = false;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (/^\s*(#|$)/.test(line)) continue;
    const g = /^\s*\[(.*)\]\s*$/.exec(line);
    if (g) {
      inGroup = g[1] === group;
      continue;
    }
    if (!inGroup) continue;
    const kv = /^([^=[]*?)\s*(\[[^\]]*\])?\s*=(.*)$/.exec(line);
    if (kv && !kv[2]) out.set(kv[1].trim(), unescapeKConfig(kv[3].trim()));
  }
  return out;
}

function readGroup(env: NodeJS.ProcessEnv): Map<string, string> {
  try {
    return readKConfigGroup(readFileSync(kioslavercPath(env), 'utf8'), GROUP);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw err;
  }
}

const reparse: Cmd = {
  argv: ['dbus-send', '--type=signal', '/KIO/Scheduler', 'org.kde.KIO.Scheduler.reparseSlaveConfiguration', 'string:'],
  optional: true,
};

function write(tool: string, key: string, value: string | null): Cmd {
  const base = [tool, '--file', 'kioslaverc', '--group', GROUP, '--key', key];
  return { argv: value === null ? [...base, '--delete'] : [...base, value] };
}

/** KDE's spelling of a proxy: "http://127.0.0.1 1080" (URL, a space, the port). */
function kdeProxy(scheme: string, host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host} ${port}`;
}

function fromKdeProxy(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const m = /^(?:\w+:\/\/)?(\S+?)(?:[ :](\d+))?$/.exec(v.trim());
  return m ? `${m[1]}:${m[2] ?? ''}` : v;
}

export const kdeBackend: Backend<KdeSaved> = {
  desktop: 'kde',

  unavailable(ctx) {
    const tool = kdeTool(ctx.env);
    return onPath(tool, ctx.env) ? undefined : `${tool} not found: install kconfig (kf6-kconfig / kde-cli-tools)`;
  },

  save(ctx) {
    const group = readGroup(ctx.env);
    const values: Record<string, string | null> = {};
    for (const k of touched) values[k] = group.get(k) ?? null;
    return { tool: kdeTool(ctx.env), values };
  },

  on(ctx, t) {
    const tool = kdeTool(ctx.env);
    const noProxy = bypassPatterns(t.bypass, '.').join(',');
    if (t.mode === 'pac') {
      return [write(tool, 'Proxy Config Script', t.pacUrl), write(tool, 'NoProxyFor', noProxy), write(tool, 'ReversedException', 'false'), write(tool, 'ProxyType', '2'), reparse];
    }
    const { host, port } = t.endpoint;
    return [
      write(tool, 'httpProxy', kdeProxy('http', host, port)),
      write(tool, 'httpsProxy', kdeProxy('http', host, port)),
      write(tool, 'socksProxy', kdeProxy('socks', host, port)),
      write(tool, 'NoProxyFor', noProxy),
      write(tool, 'ReversedException', 'false'),
      write(tool, 'ProxyType', '1'),
      reparse,
    ];
  },

  restore(ctx, saved) {
    const tool = onPath(saved.tool, ctx.env) ? saved.tool : kdeTool(ctx.env);
    const cmds = touched.filter((k) => k in saved.values).map((k) => write(tool, k, saved.values[k]));
    return [...cmds, reparse];
  },

  current(ctx) {
    const g = readGroup(ctx.env);
    const type = g.get('ProxyType') ?? '0';
    const mode: CurrentProxy['mode'] =
      type === '0' ? 'none' : type === '1' ? 'manual' : type === '2' ? 'pac' : type === '3' ? 'auto-detect' : type === '4' ? 'env' : 'other';
    return [
      {
        scope: 'kde',
        mode,
        ...(mode === 'manual' ? { http: fromKdeProxy(g.get('httpProxy')), https: fromKdeProxy(g.get('httpsProxy')), socks: fromKdeProxy(g.get('socksProxy')) } : {}),
        ...(mode === 'pac' ? { pacUrl: g.get('Proxy Config Script') } : {}),
        bypass: (g.get('NoProxyFor') ?? '').split(',').filter(Boolean),
      },
    ];
  },
};
