// macOS: networksetup, for every enabled network service (or those given with --service).
// Saved per service: the web, secure web and SOCKS proxies (on/off, server, port), the automatic
// proxy URL and its state, and the bypass domains.
import type { Backend, BackendContext, Cmd, CurrentProxy } from './proxy.js';
import { bypassPatterns, onPath, runOk } from './proxy.js';

const NS = 'networksetup';

export interface MacProxy {
  readonly enabled: boolean;
  readonly server: string;
  readonly port: number;
}

export interface MacServiceSaved {
  readonly web: MacProxy;
  readonly secure: MacProxy;
  readonly socks: MacProxy;
  readonly auto: { readonly enabled: boolean; readonly url: string | null };
  readonly bypass: readonly string[];
}

export type MacSaved = Record<string, MacServiceSaved>;

/** `networksetup -listallnetworkservices`: the names, without disabled ones (marked "*"). */
export function parseServices(text: string): string[] {
  return text
    .split('\n')
    .slice(1) // "An asterisk (*) denotes that a network service is disabled."
    .map((l) => l.trimEnd())
    .filter((l) => l && !l.startsWith('*'));
}

/** `-getwebproxy` and friends: "Enabled: Yes / Server: x / Port: n". */
export function parseProxy(text: string): MacProxy {
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1].trim() ?? '';
  return { enabled: field('Enabled') === 'Yes', server: field('Server'), port: Number(field('Port')) || 0 };
}

/** `-getautoproxyurl`: "URL: (null) / Enabled: No". */
export function parseAutoProxy(text: string): { enabled: boolean; url: string | null } {
  const url = /^URL:[ \t]*(.*)$/m.exec(text)?.[1].trim() ?? '';
  const enabled = /^Enabled:[ \t]*(.*)$/m.exec(text)?.[1].trim() === 'Yes';
  return { enabled, url: url === '' || url === '(null)' ? null : url };
}

/** `-getproxybypassdomains`: one per line, or "There aren't any bypass domains set on X." */
export function parseBypassDomains(text: string): string[] {
  if (/^There aren't any/m.test(text)) return [];
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

function services(ctx: BackendContext): string[] {
  if (ctx.services?.length) return [...ctx.services];
  if (!onPath(NS, ctx.env)) throw new Error('networksetup not found (macOS only); name the network services with --service NAME');
  return parseServices(runOk(ctx.exec, [NS, '-listallnetworkservices']));
}

const ns = (...args: string[]): Cmd => ({ argv: [NS, ...args] });

function restoreProxy(kind: 'webproxy' | 'securewebproxy' | 'socksfirewallproxy', svc: string, p: MacProxy): Cmd[] {
  if (!p.server) return [ns(`-set${kind}state`, svc, 'off')];
  const cmds = [ns(`-set${kind}`, svc, p.server, String(p.port))];
  if (!p.enabled) cmds.push(ns(`-set${kind}state`, svc, 'off'));
  return cmds;
}

export const macosBackend: Backend<MacSaved> = {
  desktop: 'macos',

  unavailable(ctx) {
    return onPath(NS, ctx.env) ? undefined : 'networksetup not found (macOS only)';
  },

  save(ctx) {
    const saved: MacSaved = {};
    for (const svc of services(ctx)) {
      saved[svc] = {
        web: parseProxy(runOk(ctx.exec, [NS, '-getwebproxy', svc])),
        secure: parseProxy(runOk(ctx.exec, [NS, '-getsecurewebproxy', svc])),
        socks: parseProxy(runOk(ctx.exec, [NS, '-getsocksfirewallproxy', svc])),
        auto: parseAutoProxy(runOk(ctx.exec, [NS, '-getautoproxyurl', svc])),
        bypass: parseBypassDomains(runOk(ctx.exec, [NS, '-getproxybypassdomains', svc])),
      };
    }
    return saved;
  },

  on(ctx, t) {
    const bypass = bypassPatterns(t.bypass, '*.');
    const host = t.endpoint.host;
    const port = String(t.endpoint.port);
    const cmds: Cmd[] = [];
    for (const svc of services(ctx)) {
      if (t.mode === 'pac') {
        cmds.push(
          ns('-setwebproxystate', svc, 'off'),
          ns('-setsecurewebproxystate', svc, 'off'),
          ns('-setsocksfirewallproxystate', svc, 'off'),
          ns('-setproxybypassdomains', svc, ...bypass),
          ns('-setautoproxyurl', svc, t.pacUrl),
        );
      } else {
        cmds.push(
          ns('-setautoproxystate', svc, 'off'),
          ns('-setproxybypassdomains', svc, ...bypass),
          ns('-setwebproxy', svc, host, port),
          ns('-setsecurewebproxy', svc, host, port),
          ns('-setsocksfirewallproxy', svc, host, port),
        );
      }
    }
    return cmds;
  },

  restore(_ctx, saved) {
    const cmds: Cmd[] = [];
    for (const [svc, s] of Object.entries(saved)) {
      cmds.push(...restoreProxy('webproxy', svc, s.web), ...restoreProxy('securewebproxy', svc, s.secure), ...restoreProxy('socksfirewallproxy', svc, s.socks));
      if (s.auto.url) {
        cmds.push(ns('-setautoproxyurl', svc, s.auto.url));
        if (!s.auto.enabled) cmds.push(ns('-setautoproxystate', svc, 'off'));
      } else {
        cmds.push(ns('-setautoproxystate', svc, 'off'));
      }
      cmds.push(ns('-setproxybypassdomains', svc, ...(s.bypass.length ? s.bypass : ['Empty'])));
    }
    return cmds;
  },

  current(ctx) {
    return services(ctx).map((svc): CurrentProxy => {
      const web = parseProxy(runOk(ctx.exec, [NS, '-getwebproxy', svc]));
      const socks = parseProxy(runOk(ctx.exec, [NS, '-getsocksfirewallproxy', svc]));
      const auto = parseAutoProxy(runOk(ctx.exec, [NS, '-getautoproxyurl', svc]));
      const hp = (p: MacProxy) => (p.enabled && p.server ? `${p.server}:${p.port}` : undefined);
      if (auto.enabled && auto.url) return { scope: svc, mode: 'pac', pacUrl: auto.url };
      if (web.enabled || socks.enabled) return { scope: svc, mode: 'manual', http: hp(web), socks: hp(socks) };
      return { scope: svc, mode: 'none' };
    });
  },
};
