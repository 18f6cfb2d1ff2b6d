// `holdfast service install|uninstall|status|print`: run holdfast at login and bring it back when it
// dies (systemd user unit, launchd agent, Task Scheduler task).
import { getuid } from 'node:process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, defaultConfigPath, loadConfig, parseListen, type ListenAddress } from '../config.js';
import { systemExec } from '../system/proxy.js';
import { launchdPlist, platforms, systemdSocket, systemdUnit, taskXml, type ServicePlatform, type ServiceSpec } from '../system/service-files.js';
import { installService, macLogDir, serviceFiles, serviceStatus, uninstallService, type ServiceContext } from '../system/service-install.js';
import { fail, parseCommand, runOptions } from './common.js';

export const help = `Usage: holdfast service install|uninstall|status|print [options]

Run holdfast whenever you are logged in, and restart it when it dies, through the platform's own
service manager:
  Linux    a systemd user unit, $XDG_CONFIG_HOME/systemd/user/holdfast.service (default
           ~/.config/systemd/user): Restart=on-failure (back within 2 s after a crash),
           WantedBy=default.target, hardening that leaves device binding alone; --socket adds
           holdfast.socket, which holds the listening port while holdfast restarts (socket
           activation: connections wait instead of being refused)
  macOS    a LaunchAgent, ~/Library/LaunchAgents/org.holdfast.proxy.plist: RunAtLoad, KeepAlive
           (restart unless it exited cleanly), logs in ~/Library/Logs/holdfast; loaded with
           launchctl bootstrap gui/UID
  Windows  a Task Scheduler task "holdfast" at logon, hidden (conhost --headless), restarted
           after a failure (Task Scheduler's shortest interval: 1 minute); schtasks /Create /XML

  install    write the file and start the service now. Where no systemd user manager runs (a
             container, a console without lingering) the unit is written, the commands to run
             are printed, and the exit status is 0.
  uninstall  stop the service and remove exactly the files install wrote (listed in
             $XDG_STATE_HOME/holdfast/service.json; a file without holdfast's marker is left)
  status     installed? enabled (starts at login)? running? does the listener answer as holdfast?
             Exit 0 when all are yes, 3 otherwise.
  print      write the file to stdout, for any platform (--platform), to read or install by hand

The service runs \`holdfast start\` with absolute paths to this node and this holdfast, and the
options below.

Options:
  -c, --config FILE       the service's configuration file (made absolute; default: the embedded
                          ${defaultConfigPath})
  -l, --listen HOST:PORT  the service listens here instead of the config's listeners (repeatable)
      --system-proxy      the service points the desktop proxy at holdfast while it runs (see
                          holdfast start --help); XDG_CURRENT_DESKTOP is recorded in the unit
      --system-proxy-mode manual | pac
      --policy-routing    the service keeps policy routing (needs CAP_NET_ADMIN)
      --mptcp             the service makes upstream sockets MPTCP (see holdfast start --help)
      --socket            Linux: also holdfast.socket (socket activation on the listen addresses)
      --platform NAME     ${platforms.join(' | ')} (print only; default: this one)
      --json              status as JSON
  -h, --help              show this help

Examples:
  holdfast service install --system-proxy     # run it at login, desktop pointed at it
  holdfast service status
  holdfast service print --platform macos
  holdfast service uninstall
`;

function thisPlatform(): ServicePlatform | undefined {
  return process.platform === 'linux' ? 'linux' : process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : undefined;
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
      ...runOptions,
      socket: { type: 'boolean' },
      platform: { type: 'string' },
      json: { type: 'boolean' },
    },
    true,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const action = positionals[0];
  if (positionals.length !== 1 || !['install', 'uninstall', 'status', 'print'].includes(action)) {
    return fail(`service: expected install, uninstall, status or print\n\n${help}`);
  }
  const here = thisPlatform();
  if (values.platform !== undefined && !(platforms as readonly string[]).includes(values.platform)) {
    return fail(`--platform ${values.platform}: expected one of ${platforms.join(', ')}`);
  }
  const platform = (values.platform as ServicePlatform | undefined) ?? here;
  if (!platform) return fail(`service: no service manager support for ${process.platform}; try holdfast service print --platform linux|macos|windows`);
  if (action !== 'print' && platform !== here) return fail(`service ${action}: --platform ${platform} is not this machine; only print renders another platform's file`);
  const mode = values['system-proxy-mode'];
  if (mode !== undefined && mode !== 'manual' && mode !== 'pac') return fail(`--system-proxy-mode ${mode}: expected manual or pac`);
  if (values.socket && platform !== 'linux') return fail('--socket: socket units are systemd (Linux) only');

  // the listeners: the config's, or --listen
  const config = values.config !== undefined ? resolve(values.config) : undefined;
  let listen: ListenAddress[] = [];
  try {
    listen = [...loadConfig(config ?? defaultConfigPath).listen];
  } catch (err) {
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
  const listenArgs: ListenAddress[] = [];
  for (const l of values.listen ?? []) {
    const a = parseListen(l);
    if (!a) return fail(`--listen ${l}: expected HOST:PORT (IPv6 as [::1]:1080)`);
    listenArgs.push(a);
  }
  if (listenArgs.length) listen = listenArgs;

  const env = process.env;
  const ctx: ServiceContext = { platform, exec: systemExec(env), env, uid: getuid?.() ?? 0 };

  if (action === 'status') {
    const st = await serviceStatus(ctx, values.listen?.length ? listenArgs : undefined, listen);
    const allGood = st.installed && st.running !== false && st.listeners.every((l) => l.answers === 'holdfast');
    if (values.json) process.stdout.write(JSON.stringify(st, null, 2) + '\n');
    else {
      const yn = (b: boolean | undefined) => (b === undefined ? `unknown (${st.manager})` : b ? 'yes' : 'no');
      const out = [
        `installed: ${st.installed ? `yes (${st.files.join(', ')})` : 'no (holdfast service install)'}`,
        `enabled:   ${yn(st.enabled)}${st.enabled ? ' (starts at login)' : ''}`,
        `running:   ${yn(st.running)}`,
        ...st.listeners.map((l) => `listener ${l.at}: ${l.answers === 'holdfast' ? 'holdfast answers' : l.answers === 'other' ? `something else answers (${l.why})` : `no answer (${l.why})`}`),
      ];
      process.stdout.write(out.join('\n') + '\n');
    }
    return allGood ? 0 : 3;
  }

  if (action === 'uninstall') {
    let r;
    try {
      r = uninstallService(ctx);
    } catch (err) {
      process.stderr.write(`holdfast: service uninstall: ${(err as Error).message}\n`);
      return 1;
    }
    for (const c of r.ran) process.stderr.write(`holdfast: ran: ${c}\n`);
    for (const f of r.removed) process.stdout.write(`removed ${f}\n`);
    for (const n of r.notes) process.stderr.write(`holdfast: ${n}\n`);
    return 0;
  }

  const spec: ServiceSpec = {
    node: process.execPath,
    cli: fileURLToPath(new URL('../cli.js', import.meta.url)),
    config,
    listen: values.socket ? undefined : listenArgs,
    systemProxy: values['system-proxy'],
    systemProxyMode: mode as 'manual' | 'pac' | undefined,
    policyRouting: values['policy-routing'],
    mptcp: values.mptcp,
    // a user manager started before the desktop session may lack it; --system-proxy needs it
    env: values['system-proxy'] && env.XDG_CURRENT_DESKTOP && platform === 'linux' ? { XDG_CURRENT_DESKTOP: env.XDG_CURRENT_DESKTOP } : undefined,
    socket: values.socket ? listen : undefined,
    logDir: platform === 'macos' ? macLogDir(env) : undefined,
    user: platform === 'windows' && env.USERNAME ? (env.USERDOMAIN ? `${env.USERDOMAIN}\\${env.USERNAME}` : env.USERNAME) : undefined,
  };

  if (action === 'print') {
    if (platform === 'linux') {
      process.stdout.write(systemdUnit(spec));
      if (spec.socket) process.stdout.write(`\n# ---- ${serviceFiles({ ...ctx, platform }, spec)[1].path}\n${systemdSocket(spec.socket)}`);
    } else if (platform === 'macos') process.stdout.write(launchdPlist(spec));
    else process.stdout.write(taskXml(spec, 'UTF-8'));
    return 0;
  }

  // install
  let r;
  try {
    r = installService(ctx, spec, listen);
  } catch (err) {
    process.stderr.write(`holdfast: service install: ${(err as Error).message}\n`);
    return 1;
  }
  if (spec.systemProxy && platform === 'linux' && !env.XDG_CURRENT_DESKTOP) {
    r = { ...r, notes: [...r.notes, 'XDG_CURRENT_DESKTOP is not set here, and a user manager started before the desktop session may lack it: --system-proxy then cannot tell the desktop. Install from a terminal of the desktop session, or set it in the unit'] };
  }
  for (const f of r.removed) process.stdout.write(`removed ${f}\n`);
  for (const f of r.written) process.stdout.write(`wrote ${f}\n`);
  for (const c of r.ran) process.stderr.write(`holdfast: ran: ${c}\n`);
  for (const n of r.notes) process.stderr.write(`holdfast: ${n}\n`);
  return 0;
}
