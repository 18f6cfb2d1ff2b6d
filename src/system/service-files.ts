// The service files that start holdfast at login and bring it back when it dies (`holdfast service
// print|install`): a systemd user unit (and optionally a socket unit) on Linux, a LaunchAgent plist
// on macOS, a Task Scheduler task on Windows. Pure text from a ServiceSpec: no file system, no
// programs run, so every platform's file is rendered and checked on any host.
import { formatHostPort, type ListenAddress } from '../config.js';

export const platforms = ['linux', 'macos', 'windows'] as const;
export type ServicePlatform = (typeof platforms)[number];

/** The first line (or comment) of every file holdfast writes: uninstall removes only files that carry it. */
export const MARKER = 'Written by `holdfast service install`; `holdfast service uninstall` removes it.';

export const UNIT_NAME = 'holdfast';
export const LAUNCHD_LABEL = 'org.holdfast.proxy';
export const TASK_NAME = 'holdfast';

export interface ServiceSpec {
  /** absolute path to node */
  readonly node: string;
  /** absolute path to holdfast's cli.js */
  readonly cli: string;
  /** absolute path to the config file, if one was given */
  readonly config?: string;
  /** passed as --listen (the config's listeners otherwise) */
  readonly listen?: readonly ListenAddress[];
  readonly systemProxy?: boolean;
  readonly systemProxyMode?: 'manual' | 'pac';
  readonly policyRouting?: boolean;
  /** `holdfast start --mptcp` */
  readonly mptcp?: boolean;
  /** variables the service needs that a login manager may lack (XDG_CURRENT_DESKTOP for --system-proxy) */
  readonly env?: Readonly<Record<string, string>>;
  /** Linux: also a socket unit holding these addresses while holdfast (re)starts */
  readonly socket?: readonly ListenAddress[];
  /** macOS: the log files */
  readonly logDir?: string;
  /** Windows: DOMAIN\user for the logon trigger (default: the task's owner) */
  readonly user?: string;
  /** the directory holdfast runs in */
  readonly workDir?: string;
}

/** What the service runs after node and cli.js. */
export function startArgs(s: ServiceSpec): string[] {
  const a = ['start'];
  if (s.config) a.push('--config', s.config);
  for (const l of s.listen ?? []) a.push('--listen', formatHostPort(l.host, l.port));
  if (s.systemProxy) a.push('--system-proxy');
  if (s.systemProxy && s.systemProxyMode && s.systemProxyMode !== 'manual') a.push('--system-proxy-mode', s.systemProxyMode);
  if (s.policyRouting) a.push('--policy-routing');
  if (s.mptcp) a.push('--mptcp');
  return a;
}

// ---- systemd --------------------------------------------------------------------------------

/** One word of a systemd command line or assignment: quoted when needed, `%` and `$` escaped. */
export function systemdWord(w: string): string {
  const escaped = w.replaceAll('%', '%%').replaceAll('$', '$$$$');
  if (/^[\w@+=:,./%$-]+$/.test(w)) return escaped;
  return `"${escaped.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

export function systemdUnit(s: ServiceSpec): string {
  const exec = [s.node, s.cli, ...startArgs(s)].map(systemdWord).join(' ');
  const env = Object.entries(s.env ?? {}).map(([k, v]) => `Environment=${systemdWord(`${k}=${v}`)}`);
  const lines = [
    `# ${MARKER}`,
    '[Unit]',
    'Description=holdfast: a local SOCKS5/HTTP proxy that keeps each connection on the interface it began on',
    ...(s.socket?.length ? [`Requires=${UNIT_NAME}.socket`, `After=${UNIT_NAME}.socket`] : []),
    '',
    '[Service]',
    'Type=exec',
    `ExecStart=${exec}`,
    // SIGHUP reloads the config without dropping flows
    'ExecReload=/bin/kill -HUP $MAINPID',
    ...(s.workDir ? [`WorkingDirectory=${systemdWord(s.workDir)}`] : []),
    ...env,
    // a crash (SIGKILL included) is followed by a restart; a clean stop (exit 0) is not
    'Restart=on-failure',
    'RestartSec=2',
    // flows get shutdown.drain (5 s by default) to finish
    'TimeoutStopSec=20',
    // Hardening that keeps device binding (SO_BINDTODEVICE on the host's own interfaces), the
    // netlink monitor (`ip monitor`) and the desktop tools (gsettings over D-Bus) working. Not set,
    // on purpose: PrivateNetwork/IPAddressDeny (holdfast must see the host's interfaces),
    // MemoryDenyWriteExecute (V8 compiles code), ProtectSystem/ProtectHome/PrivateTmp (a user
    // manager can apply them only with unprivileged user namespaces).
    'NoNewPrivileges=yes',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
    'RestrictNamespaces=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'SystemCallArchitectures=native',
    'UMask=0077',
    '',
    '[Install]',
    'WantedBy=default.target',
    '',
  ];
  return lines.join('\n');
}

/** systemd's spelling of a listen address: 127.0.0.1:1080, [::1]:1080 (it takes no names: localhost is 127.0.0.1). */
export function listenStream(a: ListenAddress): string {
  return formatHostPort(a.host === 'localhost' ? '127.0.0.1' : a.host, a.port);
}

export function systemdSocket(addresses: readonly ListenAddress[]): string {
  return [
    `# ${MARKER}`,
    '[Unit]',
    "Description=holdfast's listening sockets (held while holdfast restarts)",
    '',
    '[Socket]',
    ...addresses.map((a) => `ListenStream=${listenStream(a)}`),
    'NoDelay=true',
    '',
    '[Install]',
    'WantedBy=sockets.target',
    '',
  ].join('\n');
}

// ---- launchd --------------------------------------------------------------------------------

export function xmlText(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;').replaceAll("'", '&apos;');
}

export function launchdPlist(s: ServiceSpec): string {
  const str = (v: string) => `<string>${xmlText(v)}</string>`;
  const logDir = s.logDir ?? '/tmp';
  const env = Object.entries(s.env ?? {});
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    `<!-- ${xmlText(MARKER)} -->`,
    '<plist version="1.0">',
    '<dict>',
    `  <key>Label</key>${str(LAUNCHD_LABEL)}`,
    '  <key>ProgramArguments</key>',
    '  <array>',
    ...[s.node, s.cli, ...startArgs(s)].map((a) => `    ${str(a)}`),
    '  </array>',
    '  <key>RunAtLoad</key><true/>',
    // restart after a crash (any exit but 0), not after a clean stop
    '  <key>KeepAlive</key>',
    '  <dict><key>SuccessfulExit</key><false/></dict>',
    '  <key>ThrottleInterval</key><integer>5</integer>',
    ...(s.workDir ? [`  <key>WorkingDirectory</key>${str(s.workDir)}`] : []),
    ...(env.length
      ? ['  <key>EnvironmentVariables</key>', '  <dict>', ...env.map(([k, v]) => `    <key>${xmlText(k)}</key>${str(v)}`), '  </dict>']
      : []),
    `  <key>StandardOutPath</key>${str(`${logDir}/holdfast.log`)}`,
    `  <key>StandardErrorPath</key>${str(`${logDir}/holdfast.err.log`)}`,
    '</dict>',
    '</plist>',
    '',
  ].join('\n');
}

// ---- Windows Task Scheduler -----------------------------------------------------------------

/** One argument for a Windows command line (CommandLineToArgvW rules). */
export function windowsArg(a: string): string {
  if (a !== '' && !/[\s"]/.test(a)) return a;
  return `"${a.replace(/(\\*)"/g, '$1$1\\"').replace(/(\\+)$/, '$1$1')}"`;
}

/**
 * The task: at logon of the user, hidden (no console window: conhost --headless), restarted after a
 * failure, no time limit, not stopped on battery. `encoding` is what the declaration says: schtasks
 * /XML reads the file as UTF-16 (see taskXmlBytes); `print` shows it as UTF-8.
 */
export function taskXml(s: ServiceSpec, encoding: 'UTF-16' | 'UTF-8' = 'UTF-8'): string {
  const args = ['--headless', s.node, s.cli, ...startArgs(s)].map(windowsArg).join(' ');
  const user = s.user ? [`      <UserId>${xmlText(s.user)}</UserId>`] : [];
  return [
    `<?xml version="1.0" encoding="${encoding}"?>`,
    `<!-- ${xmlText(MARKER)} -->`,
    '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">',
    '  <RegistrationInfo>',
    '    <Description>holdfast: a local SOCKS5/HTTP proxy that keeps each connection on the interface it began on</Description>',
    `    <URI>\\${TASK_NAME}</URI>`,
    '  </RegistrationInfo>',
    '  <Triggers>',
    '    <LogonTrigger>',
    '      <Enabled>true</Enabled>',
    ...user,
    '    </LogonTrigger>',
    '  </Triggers>',
    '  <Principals>',
    '    <Principal id="Author">',
    ...user.map((l) => l.slice(2)),
    '      <LogonType>InteractiveToken</LogonType>',
    '      <RunLevel>LeastPrivilege</RunLevel>',
    '    </Principal>',
    '  </Principals>',
    '  <Settings>',
    '    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>',
    '    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>',
    '    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>',
    '    <AllowHardTerminate>true</AllowHardTerminate>',
    '    <StartWhenAvailable>true</StartWhenAvailable>',
    '    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>',
    '    <AllowStartOnDemand>true</AllowStartOnDemand>',
    '    <Enabled>true</Enabled>',
    '    <Hidden>true</Hidden>',
    '    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>',
    '    <RestartOnFailure>',
    '      <Interval>PT1M</Interval>',
    '      <Count>999</Count>',
    '    </RestartOnFailure>',
    '  </Settings>',
    '  <Actions Context="Author">',
    '    <Exec>',
    '      <Command>%SystemRoot%\\System32\\conhost.exe</Command>',
    `      <Arguments>${xmlText(args)}</Arguments>`,
    ...(s.workDir ? [`      <WorkingDirectory>${xmlText(s.workDir)}</WorkingDirectory>`] : []),
    '    </Exec>',
    '  </Actions>',
    '</Task>',
    '',
  ].join('\r\n');
}

/** The task file as schtasks /Create /XML wants it: UTF-16LE with a byte-order mark. */
export function taskXmlBytes(s: ServiceSpec): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(taskXml(s, 'UTF-16'), 'utf16le')]);
}
