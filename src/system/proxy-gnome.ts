// GNOME (and Cinnamon, MATE, Budgie, Unity: the same schema): gsettings org.gnome.system.proxy.
// Values are saved and restored as GVariant text, exactly as `gsettings list-recursively` prints them.
import type { Backend, BackendContext, Cmd, CurrentProxy, ProxySettingsTarget } from './proxy.js';
import { bypassPatterns, onPath, runOk } from './proxy.js';

const SCHEMA = 'org.gnome.system.proxy';

/** Every key `on` may set, in the order `off` restores them (mode first: apps switch at once). */
const touched = [
  [SCHEMA, 'mode'],
  [SCHEMA, 'autoconfig-url'],
  [SCHEMA, 'ignore-hosts'],
  [`${SCHEMA}.http`, 'host'],
  [`${SCHEMA}.http`, 'port'],
  [`${SCHEMA}.https`, 'host'],
  [`${SCHEMA}.https`, 'port'],
  [`${SCHEMA}.socks`, 'host'],
  [`${SCHEMA}.socks`, 'port'],
] as const;

/** "schema key" -> GVariant text */
export type GnomeSaved = Record<string, string>;

/** A GVariant string literal. */
export function gvString(s: string): string {
  return `'${s.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

export function gvStringArray(list: readonly string[]): string {
  return list.length ? `[${list.map(gvString).join(', ')}]` : '@as []';
}

/** Parse the strings of a GVariant string array ("['a', 'b']", "@as []"). */
export function parseGvStringArray(text: string): string[] {
  const out: string[] = [];
  const re = /'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push((m[1] ?? m[2]).replace(/\\(.)/g, '$1'));
  return out;
}

function parseGvScalar(text: string): string {
  const t = text.trim();
  if (/^'.*'$/.test(t) || /^".*"$/.test(t)) return t.slice(1, -1).replace(/\\(.)/g, '$1');
  return t.replace(/^u?int\d+ /, '');
}

/** `gsettings list-recursively SCHEMA` -> "schema key" -> value text. */
function listAll(ctx: BackendContext): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of runOk(ctx.exec, ['gsettings', 'list-recursively', SCHEMA]).split('\n')) {
    const m = /^(\S+) (\S+) (.*)$/.exec(line);
    if (m) out.set(`${m[1]} ${m[2]}`, m[3]);
  }
  return out;
}

const set = (schema: string, key: string, value: string): Cmd => ({ argv: ['gsettings', 'set', schema, key, value] });

export const gnomeBackend: Backend<GnomeSaved> = {
  desktop: 'gnome',

  unavailable(ctx) {
    if (!onPath('gsettings', ctx.env)) return 'gsettings not found: install libglib2.0-bin (Debian/Ubuntu) or glib2 (Fedora)';
    const r = ctx.exec(['gsettings', 'list-keys', SCHEMA]);
    if (r.error || r.code !== 0) return `gsettings has no schema ${SCHEMA}: install gsettings-desktop-schemas`;
    return undefined;
  },

  save(ctx) {
    const all = listAll(ctx);
    const saved: GnomeSaved = {};
    for (const [schema, key] of touched) {
      const v = all.get(`${schema} ${key}`);
      if (v !== undefined) saved[`${schema} ${key}`] = v;
    }
    return saved;
  },

  on(_ctx, t: ProxySettingsTarget) {
    const ignore = set(SCHEMA, 'ignore-hosts', gvStringArray(bypassPatterns(t.bypass, '*.')));
    if (t.mode === 'pac') {
      return [set(SCHEMA, 'autoconfig-url', gvString(t.pacUrl)), ignore, set(SCHEMA, 'mode', gvString('auto'))];
    }
    const host = gvString(t.endpoint.host);
    const port = String(t.endpoint.port);
    return [
      set(`${SCHEMA}.http`, 'host', host),
      set(`${SCHEMA}.http`, 'port', port),
      set(`${SCHEMA}.https`, 'host', host),
      set(`${SCHEMA}.https`, 'port', port),
      set(`${SCHEMA}.socks`, 'host', host),
      set(`${SCHEMA}.socks`, 'port', port),
      ignore,
      set(SCHEMA, 'mode', gvString('manual')),
    ];
  },

  restore(_ctx, saved) {
    const cmds: Cmd[] = [];
    for (const [schema, key] of touched) {
      const v = saved[`${schema} ${key}`];
      if (v !== undefined) cmds.push(set(schema, key, v));
    }
    return cmds;
  },

  current(ctx) {
    const all = listAll(ctx);
    const get = (schema: string, key: string) => parseGvScalar(all.get(`${schema} ${key}`) ?? "''");
    const hp = (sub: string) => {
      const host = get(`${SCHEMA}.${sub}`, 'host');
      const port = get(`${SCHEMA}.${sub}`, 'port');
      return host ? `${host.includes(':') ? `[${host}]` : host}:${port}` : undefined;
    };
    const mode = get(SCHEMA, 'mode');
    const pacUrl = get(SCHEMA, 'autoconfig-url');
    const c: CurrentProxy = {
      scope: 'gnome',
      mode: mode === 'none' ? 'none' : mode === 'manual' ? 'manual' : mode === 'auto' ? (pacUrl ? 'pac' : 'auto-detect') : 'other',
      ...(mode === 'manual' ? { http: hp('http'), https: hp('https'), socks: hp('socks') } : {}),
      ...(mode === 'auto' && pacUrl ? { pacUrl } : {}),
      bypass: parseGvStringArray(all.get(`${SCHEMA} ignore-hosts`) ?? '@as []'),
    };
    return [c];
  },
};
