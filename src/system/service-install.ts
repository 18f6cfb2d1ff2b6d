// `holdfast service install | uninstall | status`: write the service file of this platform
// (service-files.ts), hand it to the service manager (systemctl --user, launchctl, schtasks), and
// take exactly that back. What install wrote is listed in $XDG_STATE_HOME/holdfast/service.json;
// uninstall removes those files (only if they still carry holdfast's marker) and that list.
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { formatHostPort, type ListenAddress } from '../config.js';
import { clientEndpoint, endpointText, type ProxyEndpoint } from '../pac.js';
import { formatCommand, type Exec } from './proxy.js';
import {
  LAUNCHD_LABEL,
  MARKER,
  TASK_NAME,
  UNIT_NAME,
  launchdPlist,
  systemdSocket,
  systemdUnit,
  taskXmlBytes,
  type ServicePlatform,
  type ServiceSpec,
} from './service-files.js';

export interface ServiceContext {
  readonly platform: ServicePlatform;
  readonly exec: Exec;
  readonly env: NodeJS.ProcessEnv;
  /** macOS: the gui/UID domain */
  readonly uid: number;
}

/** What install wrote, so uninstall takes back exactly that. */
export interface ServiceManifest {
  readonly version: 1;
  readonly platform: ServicePlatform;
  readonly files: readonly string[];
  /** where the service listens (status asks there) */
  readonly listen: readonly ListenAddress[];
  readonly installedAt: string;
}

export interface ServiceResult {
  /** commands run, as typed */
  readonly ran: readonly string[];
  readonly written: readonly string[];
  readonly removed: readonly string[];
  /** lines for the user: what happened, what to run by hand */
  readonly notes: readonly string[];
}

function home(env: NodeJS.ProcessEnv): string {
  return env.HOME || env.USERPROFILE || homedir();
}

export function systemdUserDir(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(home(env), '.config'), 'systemd', 'user');
}

export function manifestPath(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_STATE_HOME || join(home(env), '.local', 'state'), 'holdfast', 'service.json');
}

export function launchAgentPath(env: NodeJS.ProcessEnv): string {
  return join(home(env), 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
}

export function macLogDir(env: NodeJS.ProcessEnv): string {
  return join(home(env), 'Library', 'Logs', 'holdfast');
}

export function taskFilePath(env: NodeJS.ProcessEnv): string {
  const base = env.LOCALAPPDATA || join(home(env), 'AppData', 'Local');
  return join(base, 'holdfast', 'holdfast-task.xml');
}

/** The files install writes for `spec` on this platform, with their contents. */
export function serviceFiles(ctx: ServiceContext, spec: ServiceSpec): Array<{ path: string; data: string | Buffer }> {
  switch (ctx.platform) {
    case 'linux': {
      const dir = systemdUserDir(ctx.env);
      const files: Array<{ path: string; data: string | Buffer }> = [{ path: join(dir, `${UNIT_NAME}.service`), data: systemdUnit(spec) }];
      if (spec.socket?.length) files.push({ path: join(dir, `${UNIT_NAME}.socket`), data: systemdSocket(spec.socket) });
      return files;
    }
    case 'macos':
      return [{ path: launchAgentPath(ctx.env), data: launchdPlist(spec) }];
    case 'windows':
      return [{ path: taskFilePath(ctx.env), data: taskXmlBytes(spec) }];
  }
}

/** Every path install may write here (the socket unit included): where to look without a manifest. */
function everyPath(ctx: ServiceContext): string[] {
  return serviceFiles(ctx, { node: '', cli: '', socket: [{ host: '127.0.0.1', port: 1 }] }).map((f) => f.path);
}

/** Does `file` carry holdfast's marker (UTF-8 or the task's UTF-16)? */
export function isOurs(file: string): boolean {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch {
    return false;
  }
  const text = buf[0] === 0xff && buf[1] === 0xfe ? buf.subarray(2).toString('utf16le') : buf.toString('utf8');
  return text.includes(MARKER);
}

function readManifest(env: NodeJS.ProcessEnv): ServiceManifest | undefined {
  try {
    const m = JSON.parse(readFileSync(manifestPath(env), 'utf8')) as ServiceManifest;
    return m.version === 1 ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Is a systemd user manager reachable (a login session, or lingering)? */
export function userManagerRuns(ctx: ServiceContext): { ok: true } | { ok: false; why: string } {
  const r = ctx.exec(['systemctl', '--user', 'show-environment']);
  if (!r.error && r.code === 0) return { ok: true };
  return { ok: false, why: r.error ? `systemctl: ${r.error}` : (r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`) };
}

class Runner {
  readonly ran: string[] = [];
  constructor(private readonly ctx: ServiceContext) {}
  /** Run; throw with the command and its message on failure unless `tolerate`. */
  run(argv: string[], tolerate = false): boolean {
    const style = this.ctx.platform === 'windows' ? 'windows' : 'posix';
    this.ran.push(formatCommand(argv, style));
    const r = this.ctx.exec(argv);
    if (!r.error && r.code === 0) return true;
    if (tolerate) return false;
    throw new Error(`${formatCommand(argv, style)}: ${r.error ?? `exit ${r.code}`}${r.stderr.trim() ? `: ${r.stderr.trim()}` : ''}`);
  }
}

const unitNames = (files: readonly string[]) => files.map((f) => f.slice(f.lastIndexOf('/') + 1)).filter((n) => n.startsWith(`${UNIT_NAME}.`));

/** Write the service files and start the service where a manager runs. Throws on failure. */
export function installService(ctx: ServiceContext, spec: ServiceSpec, listen: readonly ListenAddress[]): ServiceResult {
  const files = serviceFiles(ctx, spec);
  for (const f of files) {
    if (existsSync(f.path) && !isOurs(f.path)) {
      throw new Error(`${f.path} exists and was not written by holdfast: move it away first`);
    }
  }
  const reinstall = files.some((f) => existsSync(f.path));
  const r = new Runner(ctx);
  const notes: string[] = [];
  const removed: string[] = [];
  const manager = ctx.platform === 'linux' ? userManagerRuns(ctx) : undefined;
  // what an earlier install wrote and this one does not (a socket unit no longer asked for): taken back
  const stale = [...(readManifest(ctx.env)?.files ?? []), ...everyPath(ctx)].filter(
    (p, i, all) => all.indexOf(p) === i && !files.some((f) => f.path === p) && isOurs(p),
  );
  if (stale.length && ctx.platform === 'linux') {
    if (manager?.ok) r.run(['systemctl', '--user', 'disable', '--now', ...unitNames(stale)], true);
    for (const f of stale) {
      for (const link of wantsLinks(systemdUserDir(ctx.env), f)) {
        rmSync(link, { force: true });
        removed.push(link);
      }
      rmSync(f, { force: true });
      removed.push(f);
    }
  }
  // launchd and Task Scheduler: unload an earlier copy before the file changes under them
  if (reinstall && ctx.platform === 'macos') r.run(['launchctl', 'bootout', `gui/${ctx.uid}/${LAUNCHD_LABEL}`], true);
  for (const f of files) {
    mkdirSync(dirname(f.path), { recursive: true });
    writeFileSync(f.path, f.data, { mode: 0o644 });
  }
  const manifest: ServiceManifest = { version: 1, platform: ctx.platform, files: files.map((f) => f.path), listen, installedAt: new Date().toISOString() };
  mkdirSync(dirname(manifestPath(ctx.env)), { recursive: true, mode: 0o700 });
  writeFileSync(manifestPath(ctx.env), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600 });
  const written = files.map((f) => f.path);

  if (ctx.platform === 'linux') {
    const units = unitNames(written);
    const enable = ['systemctl', '--user', 'enable', '--now', ...units.filter((u) => u.endsWith('.socket')), `${UNIT_NAME}.service`];
    if (!manager?.ok) {
      notes.push(
        `no systemd user manager runs here (${manager && !manager.ok ? manager.why : ''}): the unit is written but not started. ` +
          `In a login session (or after \`loginctl enable-linger $USER\`) run: systemctl --user daemon-reload && ${formatCommand(enable)}`,
      );
    } else {
      r.run(['systemctl', '--user', 'daemon-reload']);
      r.run(enable);
      if (reinstall) r.run(['systemctl', '--user', 'restart', `${UNIT_NAME}.service`]);
      notes.push(`${UNIT_NAME}.service is enabled (starts at login) and running; logs: journalctl --user -u ${UNIT_NAME}`);
    }
    if (spec.policyRouting) {
      notes.push('--policy-routing needs CAP_NET_ADMIN, which a user service does not have unless its user manager runs as root: without it holdfast fails to start');
    }
  } else if (ctx.platform === 'macos') {
    r.run(['launchctl', 'bootstrap', `gui/${ctx.uid}`, written[0]]);
    notes.push(`loaded as gui/${ctx.uid}/${LAUNCHD_LABEL} (starts at login); logs in ${macLogDir(ctx.env)}`);
  } else {
    r.run(['schtasks', '/Create', '/TN', TASK_NAME, '/XML', written[0], '/F']);
    r.run(['schtasks', '/Run', '/TN', TASK_NAME]);
    notes.push(`task "${TASK_NAME}" runs at logon, hidden; started now`);
  }
  return { ran: r.ran, written, removed, notes };
}

/** Symlinks under the unit dir's *.wants/ that point at `file` (what `systemctl enable` made). */
function wantsLinks(dir: string, file: string): string[] {
  const out: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir).filter((e) => e.endsWith('.wants'));
  } catch {
    return out;
  }
  for (const w of entries) {
    const link = join(dir, w, file.slice(file.lastIndexOf('/') + 1));
    try {
      if (lstatSync(link).isSymbolicLink() && resolve(dirname(link), readlinkSync(link)) === file) out.push(link);
    } catch {
      /* absent */
    }
  }
  return out;
}

/** Stop the service and remove exactly what install wrote. Nothing installed: nothing done. */
export function uninstallService(ctx: ServiceContext): ServiceResult {
  const manifest = readManifest(ctx.env);
  const candidates = manifest?.platform === ctx.platform ? manifest.files : everyPath(ctx);
  const ours = candidates.filter((f) => isOurs(f));
  const notes: string[] = [];
  for (const f of candidates) if (existsSync(f) && !ours.includes(f)) notes.push(`left ${f}: it was not written by holdfast`);
  const r = new Runner(ctx);
  const removed: string[] = [];
  if (ours.length === 0) {
    rmSync(manifestPath(ctx.env), { force: true });
    notes.push('not installed: nothing to remove');
    return { ran: r.ran, written: [], removed, notes };
  }
  if (ctx.platform === 'linux') {
    const manager = userManagerRuns(ctx);
    const units = unitNames(ours);
    if (manager.ok) r.run(['systemctl', '--user', 'disable', '--now', ...units], true);
    // what `systemctl enable` linked (by install, or by hand where no manager ran)
    const dir = systemdUserDir(ctx.env);
    for (const f of ours) {
      for (const link of wantsLinks(dir, f)) {
        rmSync(link, { force: true });
        removed.push(link);
      }
    }
    for (const f of ours) {
      rmSync(f, { force: true });
      removed.push(f);
    }
    if (manager.ok) r.run(['systemctl', '--user', 'daemon-reload'], true);
    else notes.push(`no systemd user manager runs here (${manager.why}): files removed; nothing to stop`);
  } else if (ctx.platform === 'macos') {
    r.run(['launchctl', 'bootout', `gui/${ctx.uid}/${LAUNCHD_LABEL}`], true);
    for (const f of ours) {
      rmSync(f, { force: true });
      removed.push(f);
    }
    notes.push(`logs left in ${macLogDir(ctx.env)}`);
  } else {
    r.run(['schtasks', '/End', '/TN', TASK_NAME], true);
    r.run(['schtasks', '/Delete', '/TN', TASK_NAME, '/F'], true);
    for (const f of ours) {
      rmSync(f, { force: true });
      removed.push(f);
    }
  }
  rmSync(manifestPath(ctx.env), { force: true });
  return { ran: r.ran, written: [], removed, notes };
}

export interface ServiceStatus {
  readonly platform: ServicePlatform;
  readonly installed: boolean;
  readonly files: readonly string[];
  /** undefined: cannot tell (no service manager reachable) */
  readonly enabled?: boolean;
  readonly running?: boolean;
  readonly manager: string;
  readonly listeners: ReadonlyArray<{ readonly at: string; readonly answers: 'holdfast' | 'other' | 'none'; readonly why?: string }>;
}

/** GET /status at ep: holdfast, something else, or nothing (within 1.5 s). */
export function probeHoldfast(ep: ProxyEndpoint): Promise<{ answers: 'holdfast' | 'other' | 'none'; why?: string }> {
  return new Promise((done) => {
    let settled = false;
    const settle = (v: { answers: 'holdfast' | 'other' | 'none'; why?: string }) => {
      if (settled) return;
      settled = true;
      done(v);
    };
    const req = request({ host: ep.host, port: ep.port, path: '/status', timeout: 1500, headers: { host: endpointText(ep) } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 4 << 20) req.destroy();
        else chunks.push(c);
      });
      res.on('end', () => {
        try {
          const j = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { flows?: unknown };
          settle(Array.isArray(j.flows) ? { answers: 'holdfast' } : { answers: 'other', why: 'GET /status is not holdfast’s' });
        } catch {
          settle({ answers: 'other', why: `GET /status: ${res.statusCode}` });
        }
      });
      res.on('error', (err) => settle({ answers: 'other', why: err.message }));
    });
    req.on('timeout', () => {
      req.destroy();
      settle({ answers: 'none', why: 'no answer in 1500 ms' });
    });
    req.on('error', (err: NodeJS.ErrnoException) => settle({ answers: 'none', why: err.code ?? err.message }));
    req.end();
  });
}

/** `listen`: where to ask (default: where install said the service listens, else `fallback`). */
export async function serviceStatus(ctx: ServiceContext, listen?: readonly ListenAddress[], fallback: readonly ListenAddress[] = []): Promise<ServiceStatus> {
  const manifest = readManifest(ctx.env);
  const files = (manifest?.platform === ctx.platform ? manifest.files : everyPath(ctx)).filter((f) => isOurs(f));
  const installed = files.length > 0;
  let enabled: boolean | undefined;
  let running: boolean | undefined;
  let manager: string;
  if (ctx.platform === 'linux') {
    const m = userManagerRuns(ctx);
    manager = m.ok ? 'systemd user manager' : `no systemd user manager (${m.why})`;
    if (m.ok) {
      const q = (verb: string) => ctx.exec(['systemctl', '--user', verb, `${UNIT_NAME}.service`]).stdout.trim();
      enabled = q('is-enabled') === 'enabled';
      running = q('is-active') === 'active';
    }
  } else if (ctx.platform === 'macos') {
    const r = ctx.exec(['launchctl', 'print', `gui/${ctx.uid}/${LAUNCHD_LABEL}`]);
    manager = 'launchd';
    if (!r.error) {
      enabled = r.code === 0;
      running = r.code === 0 && /^\s*state = running$/m.test(r.stdout);
    }
  } else {
    const r = ctx.exec(['schtasks', '/Query', '/TN', TASK_NAME, '/FO', 'LIST', '/V']);
    manager = 'Task Scheduler';
    if (!r.error) {
      enabled = r.code === 0 && !/Scheduled Task State:\s*Disabled/i.test(r.stdout);
      running = r.code === 0 && /^Status:\s*Running/im.test(r.stdout);
    }
  }
  const where = listen ?? manifest?.listen ?? fallback;
  const listeners = [];
  for (const a of where) {
    const ep = clientEndpoint(a);
    listeners.push({ at: formatHostPort(ep.host, ep.port), ...(await probeHoldfast(ep)) });
  }
  return { platform: ctx.platform, installed, files, enabled, running, manager, listeners };
}
