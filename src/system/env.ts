// Environment variables that point applications at holdfast (`holdfast env`, `holdfast exec`),
// in the spelling of each shell, and the listener they point at (config or --listen).
import { basename } from 'node:path';
import { ConfigError, defaultConfigPath, loadConfig, parseListen, type Config } from '../config.js';
import { clientEndpoint, endpointText, noProxyList, type ProxyEndpoint } from '../pac.js';

export const shells = ['sh', 'fish', 'powershell', 'cmd'] as const;
export type Shell = (typeof shells)[number];

/** The config and the endpoint clients should use: --listen, else the config's first listener. */
export interface ProxyTarget {
  readonly cfg: Config;
  readonly endpoint: ProxyEndpoint;
}

/** Load the config and pick the endpoint. Throws ConfigError (bad file, bad --listen). */
export function loadTarget(opts: { config?: string; listen?: string }): ProxyTarget {
  const cfg = loadConfig(opts.config ?? defaultConfigPath);
  let listen = cfg.listen[0];
  if (opts.listen !== undefined) {
    const l = parseListen(opts.listen);
    if (!l) throw new ConfigError(`--listen ${opts.listen}: expected HOST:PORT (IPv6 as [::1]:1080)`);
    listen = l;
  }
  return { cfg, endpoint: clientEndpoint(listen) };
}

/** The variable names `holdfast env` sets, lower case first, then their upper-case twins. */
export const proxyVarNames = ['http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'] as const;

/** http_proxy, https_proxy (HTTP proxy), all_proxy (socks5h: names resolved by holdfast), no_proxy. */
export function proxyEnv(endpoint: ProxyEndpoint, bypass: readonly string[]): Record<string, string> {
  const hp = endpointText(endpoint);
  const lower: Record<string, string> = {
    http_proxy: `http://${hp}`,
    https_proxy: `http://${hp}`,
    all_proxy: `socks5h://${hp}`,
    no_proxy: noProxyList(bypass, endpoint),
  };
  const out: Record<string, string> = { ...lower };
  for (const [k, v] of Object.entries(lower)) out[k.toUpperCase()] = v;
  return out;
}

/** The shell to print for when --shell is not given. */
export function defaultShell(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): Shell {
  if (platform === 'win32') return 'powershell';
  if (env.SHELL && basename(env.SHELL) === 'fish') return 'fish';
  return 'sh';
}

function quoteSh(v: string): string {
  return `'${v.replaceAll("'", `'\\''`)}'`;
}

function quoteFish(v: string): string {
  return `'${v.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

function quotePowershell(v: string): string {
  return `'${v.replaceAll("'", "''")}'`;
}

/** Lines that set `vars` in `shell` (one per variable), for eval / Invoke-Expression / a .cmd file. */
export function formatEnv(vars: Record<string, string>, shell: Shell): string {
  const lines = Object.entries(vars).map(([k, v]) => {
    switch (shell) {
      case 'sh':
        return `export ${k}=${quoteSh(v)}`;
      case 'fish':
        return `set -gx ${k} ${quoteFish(v)}`;
      case 'powershell':
        return `$env:${k} = ${quotePowershell(v)}`;
      case 'cmd':
        // cmd has no quoting inside set "..."; our values never hold % or "
        return `set "${k}=${v}"`;
    }
  });
  return lines.join('\n') + '\n';
}

/** Lines that remove the variables again. */
export function formatUnset(names: readonly string[], shell: Shell): string {
  switch (shell) {
    case 'sh':
      return `unset ${names.join(' ')}\n`;
    case 'fish':
      return `set -e ${names.join(' ')}\n`;
    case 'powershell':
      return names.map((n) => `Remove-Item Env:${n} -ErrorAction SilentlyContinue`).join('\n') + '\n';
    case 'cmd':
      return names.map((n) => `set "${n}="`).join('\n') + '\n';
  }
}

/** Every name `holdfast env` sets, both cases. */
export function allProxyVarNames(): string[] {
  return [...proxyVarNames, ...proxyVarNames.map((n) => n.toUpperCase())];
}

/** What the proxy variables of `env` point at, for `holdfast doctor`. */
export function envProxyState(
  env: NodeJS.ProcessEnv,
  endpoint: ProxyEndpoint,
): { set: Record<string, string>; pointsAtHoldfast: string[]; elsewhere: string[] } {
  const set: Record<string, string> = {};
  const pointsAtHoldfast: string[] = [];
  const elsewhere: string[] = [];
  for (const name of allProxyVarNames()) {
    if (name.toLowerCase() === 'no_proxy') continue;
    const v = env[name];
    if (!v) continue;
    set[name] = v;
    let url: URL | undefined;
    try {
      url = new URL(v.includes('://') ? v : `http://${v}`);
    } catch {
      url = undefined;
    }
    const host = url?.hostname.replace(/^\[|\]$/g, '');
    const port = url ? Number(url.port || (url.protocol === 'http:' ? 80 : 1080)) : NaN;
    const same = host !== undefined && port === endpoint.port && (host === endpoint.host || (isLoopbackName(host) && isLoopbackName(endpoint.host)));
    (same ? pointsAtHoldfast : elsewhere).push(name);
  }
  return { set, pointsAtHoldfast, elsewhere };
}

function isLoopbackName(h: string): boolean {
  return h === 'localhost' || h === '::1' || h === '127.0.0.1';
}
