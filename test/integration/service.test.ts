// `holdfast service` (issue 16). Every platform's file is rendered on Linux and read back by a real
// parser or verifier: systemd-analyze verify for the units, Python's plistlib for the LaunchAgent,
// Python's XML parser for the Task Scheduler task. install/uninstall run in a temporary HOME, once
// with a fake systemd user manager (a `systemctl` on PATH that records its calls and keeps
// enabled/active state in files) and once with none reachable (no XDG_RUNTIME_DIR, no session
// bus: what a container or a console without lingering looks like).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { onPath } from '../../src/system/proxy.js';
import { MARKER, taskXmlBytes } from '../../src/system/service-files.js';
import { Child } from '../helpers/proc.js';
import { closedPort } from '../helpers/servers.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const CONFIG = fileURLToPath(new URL('../../../config/default.yaml', import.meta.url));

function need(program: string, pkg: string): string | undefined {
  if (onPath(program)) return undefined;
  const why = `needs ${program} (apt install ${pkg})`;
  if (process.env.CI === 'true') throw new Error(`CI=true but the service test ${why}`);
  console.log(`# skip: ${why}`);
  return why;
}

interface Home {
  dir: string;
  env: NodeJS.ProcessEnv;
  unit: string;
  cli(...args: string[]): { code: number | null; stdout: string; stderr: string };
}

function tempHome(t: TestContext, extraEnv: NodeJS.ProcessEnv = {}): Home {
  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-svc-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    XDG_CONFIG_HOME: join(dir, '.config'),
    XDG_STATE_HOME: join(dir, '.local', 'state'),
    ...extraEnv,
  };
  return {
    dir,
    env,
    unit: join(dir, '.config', 'systemd', 'user', 'holdfast.service'),
    cli: (...args) => {
      const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 20_000 });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

/** Every file and symlink under dir (relative paths): what a user would find. */
function filesUnder(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, prefix))) {
    const rel = join(prefix, e);
    const st = lstatSync(join(dir, rel));
    if (st.isDirectory()) out.push(...filesUnder(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

function python(code: string, input: string | Buffer): unknown {
  const r = spawnSync('python3', ['-c', code], { input, encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, `python3: ${r.stderr}`);
  return JSON.parse(r.stdout) as unknown;
}

test('print --platform linux: systemd-analyze verify accepts the unit and the socket unit, with no warning', { skip: need('systemd-analyze', 'systemd') }, (t) => {
  const h = tempHome(t);
  const p = h.cli('service', 'print', '--platform', 'linux', '--config', CONFIG, '--system-proxy', '--listen', '127.0.0.1:1090');
  assert.equal(p.code, 0, p.stderr);
  const unit = p.stdout;
  const lines = unit.split('\n');
  assert.ok(lines.includes(`ExecStart=${process.execPath} ${CLI} start --config ${CONFIG} --listen 127.0.0.1:1090 --system-proxy`), unit);
  for (const l of ['Restart=on-failure', 'WantedBy=default.target', 'NoNewPrivileges=yes', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK']) {
    assert.ok(lines.includes(l), `${l} in\n${unit}`);
  }
  // nothing that would keep holdfast from the host's interfaces (device binding) or break V8
  for (const bad of ['PrivateNetwork', 'IPAddressDeny', 'MemoryDenyWriteExecute', 'PrivateUsers']) assert.ok(!unit.includes(bad), bad);

  const withSocket = h.cli('service', 'print', '--platform', 'linux', '--socket', '--listen', '127.0.0.1:1090', '--listen', '[::1]:1090');
  assert.equal(withSocket.code, 0, withSocket.stderr);
  const [service, socket] = withSocket.stdout.split(/\n# ---- \S+holdfast\.socket\n/);
  assert.ok(socket, withSocket.stdout);
  assert.match(service, /^Requires=holdfast\.socket$/m);
  assert.ok(!service.includes('--listen'), 'socket activation: the handed sockets are the listeners');
  assert.deepEqual(socket.split('\n').filter((l) => l.startsWith('ListenStream=')), ['ListenStream=127.0.0.1:1090', 'ListenStream=[::1]:1090']);

  // systemd takes no names in ListenStream=: localhost is written as 127.0.0.1
  const named = h.cli('service', 'print', '--platform', 'linux', '--socket', '--listen', 'localhost:1091');
  assert.match(named.stdout, /^ListenStream=127\.0\.0\.1:1091$/m);

  const dir = join(h.dir, 'units');
  mkdirSync(dir);
  writeFileSync(join(dir, 'holdfast.service'), service);
  writeFileSync(join(dir, 'holdfast.socket'), socket);
  const alone = join(h.dir, 'alone');
  mkdirSync(alone);
  writeFileSync(join(alone, 'holdfast.service'), unit);
  const runtime = join(h.dir, 'runtime');
  mkdirSync(runtime, { mode: 0o700 });
  const verify = (...files: string[]) => {
    const r = spawnSync('systemd-analyze', ['--user', 'verify', ...files], { encoding: 'utf8', timeout: 30_000, env: { ...h.env, XDG_RUNTIME_DIR: runtime } });
    return { code: r.status, said: `${r.stdout}${r.stderr}`.trim() };
  };
  // systemd-analyze exits 0 even for an unknown key or a bad value (it only warns): no output is the pass
  assert.deepEqual(verify(join(alone, 'holdfast.service')), { code: 0, said: '' });
  assert.deepEqual(verify(join(dir, 'holdfast.service'), join(dir, 'holdfast.socket')), { code: 0, said: '' });
  // the check can fail: a unit with a misspelt key and a bad value is reported
  const broken = join(h.dir, 'broken');
  mkdirSync(broken);
  writeFileSync(join(broken, 'holdfast.service'), unit.replace('Restart=on-failure', 'Restart=sometimes').replace('NoNewPrivileges', 'NoNewPrivilege'));
  const bad = verify(join(broken, 'holdfast.service'));
  assert.match(bad.said, /Failed to parse service restart specifier/);
  assert.match(bad.said, /Unknown key 'NoNewPrivilege'/);
});

test('print --platform macos: a LaunchAgent plist that plistlib parses (RunAtLoad, KeepAlive, logs)', { skip: need('python3', 'python3') }, (t) => {
  const h = tempHome(t);
  const p = h.cli('service', 'print', '--platform', 'macos', '--system-proxy', '--policy-routing');
  assert.equal(p.code, 0, p.stderr);
  const plist = python('import plistlib,sys,json; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))', p.stdout);
  assert.deepEqual(plist, {
    Label: 'org.holdfast.proxy',
    ProgramArguments: [process.execPath, CLI, 'start', '--system-proxy', '--policy-routing'],
    RunAtLoad: true,
    KeepAlive: { SuccessfulExit: false },
    ThrottleInterval: 5,
    StandardOutPath: join(h.dir, 'Library', 'Logs', 'holdfast', 'holdfast.log'),
    StandardErrorPath: join(h.dir, 'Library', 'Logs', 'holdfast', 'holdfast.err.log'),
  });
});

const TASK_PY = `
import sys, json, xml.etree.ElementTree as ET
ns = {'t': 'http://schemas.microsoft.com/windows/2004/02/mit/task'}
root = ET.fromstring(sys.stdin.buffer.read())
print(json.dumps({
  'root': root.tag,
  'logon': [e.findtext('t:Enabled', namespaces=ns) for e in root.findall('t:Triggers/t:LogonTrigger', ns)],
  'user': root.findtext('t:Triggers/t:LogonTrigger/t:UserId', namespaces=ns),
  'command': [e.findtext('t:Command', namespaces=ns) for e in root.findall('t:Actions/t:Exec', ns)],
  'arguments': root.findtext('t:Actions/t:Exec/t:Arguments', namespaces=ns),
  'hidden': root.findtext('t:Settings/t:Hidden', namespaces=ns),
  'limit': root.findtext('t:Settings/t:ExecutionTimeLimit', namespaces=ns),
  'restart': root.findtext('t:Settings/t:RestartOnFailure/t:Count', namespaces=ns),
}))`;

test('print --platform windows: Task Scheduler XML with a LogonTrigger and an Exec action, hidden; the UTF-16 file parses alike', { skip: need('python3', 'python3') }, (t) => {
  const h = tempHome(t, { USERDOMAIN: 'LAPTOP', USERNAME: 'ada' });
  const odd = join(h.dir, 'a dir', 'with "quotes"');
  mkdirSync(odd, { recursive: true });
  writeFileSync(join(odd, 'c.yaml'), readFileSync(CONFIG));
  const p = h.cli('service', 'print', '--platform', 'windows', '--config', join(odd, 'c.yaml'));
  assert.equal(p.code, 0, p.stderr);
  const task = python(TASK_PY, p.stdout);
  assert.deepEqual(task, {
    root: '{http://schemas.microsoft.com/windows/2004/02/mit/task}Task',
    logon: ['true'],
    user: 'LAPTOP\\ada',
    command: ['%SystemRoot%\\System32\\conhost.exe'],
    arguments: `--headless ${process.execPath} ${CLI} start --config "${h.dir}/a dir/with \\"quotes\\"/c.yaml"`,
    hidden: 'true',
    limit: 'PT0S',
    restart: '999',
  });
  // what install hands to schtasks /XML: UTF-16LE with a BOM, declared as such
  const bytes = taskXmlBytes({ node: 'C:\\Program Files\\nodejs\\node.exe', cli: 'C:\\hf\\cli.js' });
  assert.deepEqual([bytes[0], bytes[1]], [0xff, 0xfe]);
  const fromFile = python(TASK_PY, bytes) as { arguments: string; logon: string[] };
  assert.equal(fromFile.arguments, '--headless "C:\\Program Files\\nodejs\\node.exe" C:\\hf\\cli.js start');
  assert.deepEqual(fromFile.logon, ['true']);
});

/** A fake systemd user manager: `systemctl` on PATH records its calls and keeps state in files. */
function fakeSystemctl(t: TestContext): { bin: string; calls(): string[] } {
  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-systemctl-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const log = join(dir, 'calls.log');
  writeFileSync(
    join(bin, 'systemctl'),
    `#!/bin/sh
echo "$*" >> '${log}'
[ "$1" = --user ] || exit 1
shift
s='${dir}'
case "$1" in
  show-environment) echo HOME=$HOME ;;
  daemon-reload|restart) ;;
  enable) touch "$s/enabled"; [ "$2" = --now ] && touch "$s/active" ;;
  disable) rm -f "$s/enabled"; [ "$2" = --now ] && rm -f "$s/active" ;;
  is-enabled) if [ -e "$s/enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  is-active) if [ -e "$s/active" ]; then echo active; else echo inactive; exit 3; fi ;;
  *) echo "fake systemctl: $1?" >&2; exit 1 ;;
esac
`,
  );
  chmodSync(join(bin, 'systemctl'), 0o755);
  return { bin, calls: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []) };
}

test('install, status, uninstall with a (fake) user manager in a temporary HOME: uninstall takes back exactly what install wrote', async (t) => {
  const sc = fakeSystemctl(t);
  const h = tempHome(t, { XDG_CURRENT_DESKTOP: 'ubuntu:GNOME' });
  h.env.PATH = `${sc.bin}:${process.env.PATH}`;
  writeFileSync(join(h.dir, '.profile'), 'the user\'s own file\n');
  const before = filesUnder(h.dir);
  const port = await closedPort();

  const inst = h.cli('service', 'install', '--config', CONFIG, '--listen', `127.0.0.1:${port}`, '--system-proxy');
  assert.equal(inst.code, 0, inst.stderr);
  assert.equal(inst.stdout, `wrote ${h.unit}\n`);
  assert.deepEqual(sc.calls(), ['--user show-environment', '--user daemon-reload', '--user enable --now holdfast.service']);
  const unit = readFileSync(h.unit, 'utf8');
  assert.ok(unit.startsWith(`# ${MARKER}\n`));
  assert.match(unit, new RegExp(`^ExecStart=${process.execPath} ${CLI} start --config ${CONFIG} --listen 127\\.0\\.0\\.1:${port} --system-proxy$`, 'm'));
  assert.match(unit, /^Environment=XDG_CURRENT_DESKTOP=ubuntu:GNOME$/m, 'the desktop --system-proxy needs, for a manager started before the session');

  // status: enabled and "running" (the fake says so), but nothing answers at the port yet
  const down = h.cli('service', 'status', '--json');
  assert.equal(down.code, 3, down.stdout);
  const sDown = JSON.parse(down.stdout) as { installed: boolean; enabled: boolean; running: boolean; listeners: Array<{ at: string; answers: string }> };
  assert.deepEqual([sDown.installed, sDown.enabled, sDown.running], [true, true, true]);
  assert.deepEqual(sDown.listeners.map((l) => [l.at, l.answers]), [[`127.0.0.1:${port}`, 'none']]);

  // a real holdfast at the port: the listener answers as holdfast
  const hf = new Child([process.execPath, CLI, 'start', '--listen', `127.0.0.1:${port}`], { env: h.env });
  t.after(() => hf.kill());
  await hf.waitForLine((l) => l.includes('"msg":"listening"'), 10_000, '"listening"');
  const up = h.cli('service', 'status');
  assert.equal(up.code, 0, up.stdout);
  assert.match(up.stdout, /^enabled: {3}yes \(starts at login\)$/m);
  assert.match(up.stdout, new RegExp(`^listener 127\\.0\\.0\\.1:${port}: holdfast answers$`, 'm'));
  await hf.kill();

  // install again: the running service is restarted with the new unit
  let mark = sc.calls().length;
  const again = h.cli('service', 'install', '--config', CONFIG, '--listen', `127.0.0.1:${port}`);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(sc.calls().slice(mark), ['--user show-environment', '--user daemon-reload', '--user enable --now holdfast.service', '--user restart holdfast.service']);
  mark = sc.calls().length;
  assert.ok(!readFileSync(h.unit, 'utf8').includes('--system-proxy'));

  const un = h.cli('service', 'uninstall');
  assert.equal(un.code, 0, un.stderr);
  assert.equal(un.stdout, `removed ${h.unit}\n`);
  assert.deepEqual(sc.calls().slice(mark), ['--user show-environment', '--user disable --now holdfast.service', '--user daemon-reload']);
  assert.deepEqual(filesUnder(h.dir), before, 'every file install wrote is gone, and only those');
  const st = h.cli('service', 'status', '--json');
  assert.equal(st.code, 3);
  assert.deepEqual(JSON.parse(st.stdout).installed, false);
});

test('install where no user manager runs: writes the unit, says what to run, exits 0; uninstall removes it and what `enable` linked', (t) => {
  // no XDG_RUNTIME_DIR and no session bus: the real systemctl (or none) cannot reach a manager
  const h = tempHome(t);
  const inst = h.cli('service', 'install', '--socket', '--listen', '127.0.0.1:1090');
  assert.equal(inst.code, 0, inst.stderr);
  const socketUnit = h.unit.replace(/\.service$/, '.socket');
  assert.equal(inst.stdout, `wrote ${h.unit}\nwrote ${socketUnit}\n`);
  assert.match(
    inst.stderr,
    /no systemd user manager runs here \(.+\): the unit is written but not started\. .* run: systemctl --user daemon-reload && systemctl --user enable --now holdfast\.socket holdfast\.service/,
  );
  assert.ok(!inst.stderr.includes('ran:'), 'nothing was run');
  assert.match(readFileSync(socketUnit, 'utf8'), /^ListenStream=127\.0\.0\.1:1090$/m);
  const st = h.cli('service', 'status', '--json');
  const s = JSON.parse(st.stdout) as { installed: boolean; enabled?: boolean; manager: string };
  assert.equal(s.installed, true);
  assert.equal(s.enabled, undefined, 'cannot tell without a manager');
  assert.match(s.manager, /^no systemd user manager/);

  // the user ran `systemctl --user enable` later, somewhere a manager ran: its links go too
  const wants = join(h.dir, '.config', 'systemd', 'user', 'default.target.wants');
  mkdirSync(wants);
  symlinkSync(h.unit, join(wants, 'holdfast.service'));
  const other = join(wants, 'other.service');
  symlinkSync('/dev/null', other);
  const un = h.cli('service', 'uninstall');
  assert.equal(un.code, 0, un.stderr);
  assert.equal(un.stdout, `removed ${join(wants, 'holdfast.service')}\nremoved ${h.unit}\nremoved ${socketUnit}\n`);
  assert.ok(lstatSync(other).isSymbolicLink(), "another unit's link is left alone");
  assert.ok(!existsSync(join(h.dir, '.local', 'state', 'holdfast', 'service.json')));
});

test('install without --socket after one with it takes the socket unit back (stopped first)', (t) => {
  const sc = fakeSystemctl(t);
  const h = tempHome(t);
  h.env.PATH = `${sc.bin}:${process.env.PATH}`;
  const before = filesUnder(h.dir);
  const socketUnit = h.unit.replace(/\.service$/, '.socket');
  const first = h.cli('service', 'install', '--socket');
  assert.equal(first.code, 0, first.stderr);
  assert.ok(existsSync(socketUnit));
  assert.deepEqual(sc.calls().slice(1), ['--user daemon-reload', '--user enable --now holdfast.socket holdfast.service']);
  const mark = sc.calls().length;
  const second = h.cli('service', 'install');
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stdout, `removed ${socketUnit}\nwrote ${h.unit}\n`);
  assert.ok(!existsSync(socketUnit));
  assert.ok(!readFileSync(h.unit, 'utf8').includes('holdfast.socket'));
  assert.deepEqual(sc.calls().slice(mark), [
    '--user show-environment',
    '--user disable --now holdfast.socket',
    '--user daemon-reload',
    '--user enable --now holdfast.service',
    '--user restart holdfast.service',
  ]);
  assert.equal(h.cli('service', 'uninstall').code, 0);
  assert.deepEqual(filesUnder(h.dir), before);
});

test('a unit file holdfast did not write is neither overwritten nor removed', (t) => {
  const h = tempHome(t);
  mkdirSync(join(h.dir, '.config', 'systemd', 'user'), { recursive: true });
  writeFileSync(h.unit, '[Service]\nExecStart=/usr/bin/true\n');
  const inst = h.cli('service', 'install');
  assert.equal(inst.code, 1);
  assert.match(inst.stderr, /holdfast\.service exists and was not written by holdfast: move it away first/);
  const un = h.cli('service', 'uninstall');
  assert.equal(un.code, 0);
  assert.match(un.stderr, /left .*holdfast\.service: it was not written by holdfast/);
  assert.equal(readFileSync(h.unit, 'utf8'), '[Service]\nExecStart=/usr/bin/true\n');
});

test('holdfast --help lists service; service --help explains it; bad usage exits 2', (t) => {
  const h = tempHome(t);
  const main = h.cli('--help');
  assert.match(main.stdout, /^ {2}service +run holdfast at login, restarted if it dies: install \| uninstall \| status \| print$/m);
  const help = h.cli('service', '--help');
  assert.equal(help.code, 0);
  for (const s of ['Restart=on-failure', 'launchctl bootstrap gui/UID', 'schtasks /Create /XML', '--socket', 'exactly the files install wrote']) assert.ok(help.stdout.includes(s), s);
  assert.equal(h.cli('service').code, 2);
  assert.equal(h.cli('service', 'install', '--platform', 'windows').code, 2);
  assert.match(h.cli('service', 'print', '--platform', 'beos').stderr, /--platform beos: expected one of linux, macos, windows/);
});
