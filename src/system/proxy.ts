// The desktop's proxy setting (`holdfast system-proxy on|off|status`, `holdfast start
// --system-proxy`). One backend per desktop turns settings into command lines (gsettings,
// kwriteconfig, networksetup, reg.exe); this part picks the backend, saves what `on` changes in a
// state file, and puts exactly that back on `off`. Commands run synchronously: a few short
// programs, at start and stop only, and the exit handler can restore too.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { endpointText, parseBypass, type BypassRule, type ProxyEndpoint } from '../pac.js';
import { gnomeBackend } from './proxy-gnome.js';
import { kdeBackend } from './proxy-kde.js';
import { macosBackend } from './proxy-macos.js';
import { windowsBackend } from './proxy-windows.js';

export const desktops = ['gnome', 'kde', 'macos', 'windows'] as const;
export type Desktop = (typeof desktops)[number];
export type ProxyMode = 'manual' | 'pac';

/** One command line; `optional` ones (a reload signal) may fail with only a warning. */
export interface Cmd {
  readonly argv: readonly string[];
  readonly optional?: boolean;
}

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** spawn failed (ENOENT...) */
  readonly error?: string;
}

export type Exec = (argv: readonly string[]) => ExecResult;

/** A command failed: names it and what it said. */
export class SystemCommandError extends Error {
  override name = 'SystemCommandError';
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    super(`${formatCommand(argv)}: ${result.error ?? `exit ${result.code}`}${result.stderr.trim() ? `: ${result.stderr.trim()}` : ''}`);
  }
}

/** Run programs for real, bounded (10 s each). */
export function systemExec(env: NodeJS.ProcessEnv = process.env): Exec {
  return (argv) => {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env, timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return {
      code: r.status,
      stdout: r.stdout ?? '',
      stderr: r.stderr ?? '',
      ...(r.error ? { error: (r.error as NodeJS.ErrnoException).code ?? r.error.message } : {}),
    };
  };
}

/** Run and return stdout; throws SystemCommandError on failure. */
export function runOk(exec: Exec, argv: readonly string[]): string {
  const r = exec(argv);
  if (r.error || r.code !== 0) throw new SystemCommandError(argv, r);
  return r.stdout;
}

/** Is `program` on PATH (or a path that exists)? */
export function onPath(program: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (program.includes('/') || program.includes('\\')) return existsSync(program);
  const exts = process.platform === 'win32' ? (env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';') : [''];
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    for (const ext of exts) if (existsSync(join(dir, program + ext))) return true;
  }
  return false;
}

// ---- what the backends are given ------------------------------------------------------------

export interface BackendContext {
  readonly exec: Exec;
  readonly env: NodeJS.ProcessEnv;
  /** macOS: only these network services (default: every enabled one) */
  readonly services?: readonly string[];
  /** Windows: WinHTTP too (netsh; needs an elevated shell) */
  readonly winhttp?: boolean;
}

/** What `on` points the desktop at. */
export interface ProxySettingsTarget {
  readonly endpoint: ProxyEndpoint;
  readonly pacUrl: string;
  /** parsed bypass rules, the listener included */
  readonly bypass: readonly BypassRule[];
  readonly mode: ProxyMode;
}

/** The desktop's current proxy setting, normalized (status, doctor). */
export interface CurrentProxy {
  /** "Wi-Fi" on macOS; the desktop elsewhere */
  readonly scope: string;
  readonly mode: 'none' | 'manual' | 'pac' | 'auto-detect' | 'env' | 'other';
  readonly http?: string;
  readonly https?: string;
  readonly socks?: string;
  readonly pacUrl?: string;
  readonly bypass?: readonly string[];
}

export interface Backend<Saved = unknown> {
  readonly desktop: Desktop;
  /** Why it cannot run here (a missing program), or undefined. */
  unavailable(ctx: BackendContext): string | undefined;
  /** Read everything `on` will change. */
  save(ctx: BackendContext): Saved;
  /** The commands that point the desktop at holdfast. */
  on(ctx: BackendContext, target: ProxySettingsTarget): Cmd[];
  /** The commands that put `saved` back. */
  restore(ctx: BackendContext, saved: Saved): Cmd[];
  /** Read the current setting. */
  current(ctx: BackendContext): CurrentProxy[];
}

export function backendFor(desktop: Desktop): Backend {
  switch (desktop) {
    case 'gnome':
      return gnomeBackend as Backend;
    case 'kde':
      return kdeBackend as Backend;
    case 'macos':
      return macosBackend as Backend;
    case 'windows':
      return windowsBackend as Backend;
  }
}

/** The desktop from the platform and XDG_CURRENT_DESKTOP (or DESKTOP_SESSION), if known. */
export function detectDesktop(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): Desktop | undefined {
  if (platform === 'win32') return 'windows';
  if (platform === 'darwin') return 'macos';
  const names = `${env.XDG_CURRENT_DESKTOP ?? ''}:${env.XDG_CURRENT_DESKTOP ? '' : (env.DESKTOP_SESSION ?? '')}`
    .toLowerCase()
    .split(/[:;]/)
    .filter(Boolean);
  if (names.some((n) => n === 'kde' || n.startsWith('plasma'))) return 'kde';
  const gnomeLike = ['gnome', 'unity', 'cinnamon', 'x-cinnamon', 'mate', 'budgie', 'budgie-desktop', 'pantheon', 'gnome-classic', 'gnome-flashback', 'ubuntu', 'pop', 'cosmic'];
  if (names.some((n) => gnomeLike.includes(n))) return 'gnome';
  return undefined;
}

// ---- spellings shared by backends -----------------------------------------------------------

/** Bypass rules as host patterns most desktops take: names, "*.suffix", addresses, CIDR. */
export function bypassPatterns(rules: readonly BypassRule[], suffixStyle: '*.' | '.' = '*.'): string[] {
  const out: string[] = [];
  for (const r of rules) {
    let s: string | undefined;
    if (r.kind === 'name') s = r.name;
    else if (r.kind === 'suffix') s = suffixStyle === '*.' ? `*${r.suffix}` : r.suffix;
    else if (r.kind === 'net') s = r.prefixLen === (r.family === 4 ? 32 : 128) ? r.ip : `${r.ip}/${r.prefixLen}`;
    if (s !== undefined && !out.includes(s)) out.push(s);
  }
  return out;
}

/** A command as a person would type it (POSIX quoting; Windows double quotes). */
export function formatCommand(argv: readonly string[], style: 'posix' | 'windows' = 'posix'): string {
  return argv
    .map((a) => {
      if (/^[\w@%+=:,./-]+$/.test(a)) return a;
      if (style === 'windows') return `"${a.replaceAll('"', '\\"')}"`;
      if (!a.includes("'")) return `'${a}'`;
      if (!/[$`"\\!]/.test(a)) return `"${a}"`;
      return `'${a.replaceAll("'", `'\\''`)}'`;
    })
    .join(' ');
}

export function commandStyle(desktop: Desktop): 'posix' | 'windows' {
  return desktop === 'windows' ? 'windows' : 'posix';
}

// ---- the state file -------------------------------------------------------------------------

export interface ProxyState {
  readonly version: 1;
  readonly desktop: Desktop;
  readonly mode: ProxyMode;
  readonly endpoint: ProxyEndpoint;
  readonly savedAt: string;
  /** the backend's saved settings, from before the first `on` */
  readonly previous: unknown;
}

/** $XDG_STATE_HOME/holdfast/system-proxy.json, else ~/.local/state/holdfast/system-proxy.json. */
export function statePath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state');
  return join(base, 'holdfast', 'system-proxy.json');
}

export function readState(file: string): ProxyState | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const s = JSON.parse(text) as ProxyState;
  if (s.version !== 1 || !desktops.includes(s.desktop)) throw new Error(`${file}: not a holdfast system-proxy state file`);
  return s;
}

function writeState(file: string, s: ProxyState): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

// ---- on / off -------------------------------------------------------------------------------

export interface SystemProxyOptions {
  readonly desktop: Desktop;
  readonly ctx: BackendContext;
  readonly stateFile: string;
  /** print instead of run */
  readonly dryRun?: boolean;
  /** where command lines (dry run) and notes go */
  readonly out?: (line: string) => void;
}

export interface OnResult {
  readonly commands: readonly Cmd[];
  /** false when a saved state from an earlier `on` was kept (what to restore stays the original) */
  readonly saved: boolean;
  readonly warnings: readonly string[];
}

function execute(o: SystemProxyOptions, cmds: readonly Cmd[]): string[] {
  const warnings: string[] = [];
  const style = commandStyle(o.desktop);
  for (const c of cmds) {
    if (o.dryRun) {
      o.out?.(formatCommand(c.argv, style));
      continue;
    }
    const r = o.ctx.exec(c.argv);
    if (r.error || r.code !== 0) {
      const err = new SystemCommandError(c.argv, r);
      if (!c.optional) throw err;
      warnings.push(err.message);
    }
  }
  return warnings;
}

/** Build the target `on` points at. */
export function proxyTarget(endpoint: ProxyEndpoint, bypass: readonly string[], mode: ProxyMode): ProxySettingsTarget {
  return {
    endpoint,
    pacUrl: `http://${endpointText(endpoint)}/proxy.pac`,
    bypass: parseBypass(bypass, endpoint),
    mode,
  };
}

/**
 * Point the desktop at holdfast. The settings it changes are saved first, unless a state file
 * from an earlier `on` exists (then those original settings stay the ones `off` restores).
 */
export function systemProxyOn(o: SystemProxyOptions, target: ProxySettingsTarget): OnResult {
  const backend = backendFor(o.desktop);
  const why = backend.unavailable(o.ctx);
  if (why && !o.dryRun) throw new Error(why);
  const cmds = backend.on(o.ctx, target);
  if (o.dryRun) {
    execute(o, cmds);
    return { commands: cmds, saved: false, warnings: [] };
  }
  const existing = readState(o.stateFile);
  if (existing && existing.desktop !== o.desktop) {
    throw new Error(
      `${o.stateFile} holds the ${existing.desktop} settings saved by an earlier \`on\`: run \`holdfast system-proxy off\` first, so they are not lost`,
    );
  }
  let saved = false;
  if (!existing) {
    writeState(o.stateFile, {
      version: 1,
      desktop: o.desktop,
      mode: target.mode,
      endpoint: target.endpoint,
      savedAt: new Date().toISOString(),
      previous: backend.save(o.ctx),
    });
    saved = true;
  } else {
    writeState(o.stateFile, { ...existing, mode: target.mode, endpoint: target.endpoint });
  }
  const warnings = execute(o, cmds);
  return { commands: cmds, saved, warnings };
}

export interface OffResult {
  readonly commands: readonly Cmd[];
  /** false when there was nothing saved to restore */
  readonly restored: boolean;
  readonly warnings: readonly string[];
}

/** Put back what the first `on` saved, then forget it. */
export function systemProxyOff(o: SystemProxyOptions): OffResult {
  const state = readState(o.stateFile);
  if (!state) return { commands: [], restored: false, warnings: [] };
  const backend = backendFor(state.desktop);
  const cmds = backend.restore(o.ctx, state.previous);
  const warnings = execute({ ...o, desktop: state.desktop }, cmds);
  if (!o.dryRun) rmSync(o.stateFile, { force: true });
  return { commands: cmds, restored: true, warnings };
}

/** Does this setting send traffic to holdfast at endpoint? */
export function pointsAt(c: CurrentProxy, endpoint: ProxyEndpoint): boolean {
  const same = (hp: string | undefined) => {
    if (!hp) return false;
    const m = /^(?:\w+:\/\/)?\[?([^\]]*?)\]?:(\d+)\/?$/.exec(hp);
    if (!m) return false;
    return Number(m[2]) === endpoint.port && sameHost(m[1], endpoint.host);
  };
  if (c.mode === 'manual') return same(c.http) || same(c.socks);
  if (c.mode === 'pac' && c.pacUrl) {
    try {
      const u = new URL(c.pacUrl);
      return u.pathname === '/proxy.pac' && Number(u.port || 80) === endpoint.port && sameHost(u.hostname.replace(/^\[|\]$/g, ''), endpoint.host);
    } catch {
      return false;
    }
  }
  return false;
}

function sameHost(a: string, b: string): boolean {
  const loop = (h: string) => h === 'localhost' || h === '127.0.0.1' || h === '::1';
  return a.toLowerCase() === b.toLowerCase() || (loop(a) && loop(b));
}

// ---- holdfast start --system-proxy ----------------------------------------------------------

export interface HoldOptions {
  readonly endpoint: ProxyEndpoint;
  readonly bypass: readonly string[];
  readonly mode: ProxyMode;
  /** default: detected */
  readonly desktop?: Desktop;
  readonly log: Logger;
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * Point the desktop at holdfast now; the returned function restores what was there (also run
 * from process 'exit' if the caller never gets to). Throws if the desktop is unknown or its
 * tool fails.
 */
export function holdSystemProxy(o: HoldOptions): () => void {
  const env = o.env ?? process.env;
  const desktop = o.desktop ?? detectDesktop(env);
  if (!desktop) {
    throw new Error('--system-proxy: cannot tell the desktop (XDG_CURRENT_DESKTOP is not GNOME-like or KDE); set it, or use holdfast system-proxy on --desktop gnome|kde');
  }
  const opts: SystemProxyOptions = { desktop, ctx: { exec: systemExec(env), env }, stateFile: statePath(env) };
  const r = systemProxyOn(opts, proxyTarget(o.endpoint, o.bypass, o.mode));
  for (const w of r.warnings) o.log.warn({ why: w }, 'system proxy: a command failed');
  o.log.info({ desktop, mode: o.mode, proxy: endpointText(o.endpoint), stateFile: opts.stateFile }, 'system proxy on');
  let done = false;
  const restore = () => {
    if (done) return;
    done = true;
    process.removeListener('exit', restore);
    try {
      const off = systemProxyOff(opts);
      for (const w of off.warnings) o.log.warn({ why: w }, 'system proxy: a command failed');
      o.log.info({ desktop, restored: off.restored }, 'system proxy restored');
    } catch (err) {
      o.log.error({ err, stateFile: opts.stateFile }, 'system proxy restore failed: run `holdfast system-proxy off`');
    }
  };
  process.on('exit', restore);
  return restore;
}
