// `holdfast system-proxy on|off --dry-run` for the desktops this host cannot run (KDE, macOS,
// Windows; GNOME runs for real in system-proxy-gnome.test.ts): the exact command lines, for `on`
// in both modes and for `off` from a saved state file. A dry run changes nothing, saves nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const KEY = 'HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings';
const NO_PROXY = 'localhost,127.0.0.0/8,::1,.local,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,fe80::/10';
const MAC_BYPASS = "localhost 127.0.0.0/8 ::1 '*.local' 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 169.254.0.0/16 fe80::/10";
const WIN_OVERRIDE =
  'localhost;127.*;[::1];*.local;10.*;' + Array.from({ length: 16 }, (_, i) => `172.${16 + i}.*`).join(';') + ';192.168.*;169.254.*';

interface Env {
  env: NodeJS.ProcessEnv;
  state: string;
  cli(...args: string[]): { code: number | null; stdout: string; stderr: string };
}

function setup(t: TestContext, extra: NodeJS.ProcessEnv = {}): Env {
  const home = mkdtempSync(join(tmpdir(), `hf${process.pid}-sp-`));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  // PATH without kwriteconfig, networksetup or reg: nothing could run even if a dry run tried
  const env: NodeJS.ProcessEnv = { PATH: '/usr/bin:/bin', HOME: home, XDG_STATE_HOME: join(home, 'state'), XDG_CONFIG_HOME: join(home, 'config'), ...extra };
  return {
    env,
    state: join(home, 'state', 'holdfast', 'system-proxy.json'),
    cli: (...args) => {
      const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 20_000 });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

function lines(out: string): string[] {
  return out.split('\n').filter(Boolean);
}

const on = (e: Env, ...args: string[]) => {
  const r = e.cli('system-proxy', 'on', '--dry-run', '--listen', '127.0.0.1:1090', ...args);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!existsSync(e.state), 'a dry run saves nothing');
  return lines(r.stdout);
};

function writeState(e: Env, desktop: string, previous: unknown): void {
  mkdirSync(dirname(e.state), { recursive: true });
  writeFileSync(e.state, JSON.stringify({ version: 1, desktop, mode: 'manual', endpoint: { host: '127.0.0.1', port: 1090 }, savedAt: '2026-01-01T00:00:00.000Z', previous }));
}

const off = (e: Env) => {
  const before = readFileSync(e.state, 'utf8');
  const r = e.cli('system-proxy', 'off', '--dry-run');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(e.state, 'utf8'), before, 'a dry run keeps the state file');
  return lines(r.stdout);
};

test('KDE (Plasma 5): kwriteconfig5 for manual and PAC, ProxyType last, then the reload signal', (t) => {
  const e = setup(t, { KDE_SESSION_VERSION: '5', XDG_CURRENT_DESKTOP: 'KDE' });
  const kw = "kwriteconfig5 --file kioslaverc --group 'Proxy Settings' --key";
  const dbus = 'dbus-send --type=signal /KIO/Scheduler org.kde.KIO.Scheduler.reparseSlaveConfiguration string:';
  assert.deepEqual(on(e), [
    `${kw} httpProxy 'http://127.0.0.1 1090'`,
    `${kw} httpsProxy 'http://127.0.0.1 1090'`,
    `${kw} socksProxy 'socks://127.0.0.1 1090'`,
    `${kw} NoProxyFor ${NO_PROXY}`,
    `${kw} ReversedException false`,
    `${kw} ProxyType 1`,
    dbus,
  ]);
  assert.deepEqual(on(e, '--pac'), [
    `${kw} 'Proxy Config Script' http://127.0.0.1:1090/proxy.pac`,
    `${kw} NoProxyFor ${NO_PROXY}`,
    `${kw} ReversedException false`,
    `${kw} ProxyType 2`,
    dbus,
  ]);
  // off: keys that were absent are deleted, the others written back
  writeState(e, 'kde', {
    tool: 'kwriteconfig5',
    values: { ProxyType: '0', httpProxy: null, httpsProxy: null, socksProxy: 'socks://old.example 1080', NoProxyFor: null, ReversedException: null, 'Proxy Config Script': null },
  });
  assert.deepEqual(off(e), [
    `${kw} ProxyType 0`,
    `${kw} httpProxy --delete`,
    `${kw} httpsProxy --delete`,
    `${kw} socksProxy 'socks://old.example 1080'`,
    `${kw} NoProxyFor --delete`,
    `${kw} ReversedException --delete`,
    `${kw} 'Proxy Config Script' --delete`,
    dbus,
  ]);
});

test('KDE (Plasma 6): kwriteconfig6', (t) => {
  const e = setup(t, { KDE_SESSION_VERSION: '6', XDG_CURRENT_DESKTOP: 'KDE' });
  // the same lines as Plasma 5, with kwriteconfig6 (issue 12: `every` on an empty list passed)
  const kw = "kwriteconfig6 --file kioslaverc --group 'Proxy Settings' --key";
  assert.deepEqual(on(e), [
    `${kw} httpProxy 'http://127.0.0.1 1090'`,
    `${kw} httpsProxy 'http://127.0.0.1 1090'`,
    `${kw} socksProxy 'socks://127.0.0.1 1090'`,
    `${kw} NoProxyFor ${NO_PROXY}`,
    `${kw} ReversedException false`,
    `${kw} ProxyType 1`,
    'dbus-send --type=signal /KIO/Scheduler org.kde.KIO.Scheduler.reparseSlaveConfiguration string:',
  ]);
});

test('macOS: networksetup for each --service, manual and PAC; off restores servers, states, URL and bypass', (t) => {
  const e = setup(t);
  assert.deepEqual(on(e, '--desktop', 'macos', '--service', 'Wi-Fi', '--service', 'USB 10/100/1000 LAN'), [
    'networksetup -setautoproxystate Wi-Fi off',
    `networksetup -setproxybypassdomains Wi-Fi ${MAC_BYPASS}`,
    'networksetup -setwebproxy Wi-Fi 127.0.0.1 1090',
    'networksetup -setsecurewebproxy Wi-Fi 127.0.0.1 1090',
    'networksetup -setsocksfirewallproxy Wi-Fi 127.0.0.1 1090',
    "networksetup -setautoproxystate 'USB 10/100/1000 LAN' off",
    `networksetup -setproxybypassdomains 'USB 10/100/1000 LAN' ${MAC_BYPASS}`,
    "networksetup -setwebproxy 'USB 10/100/1000 LAN' 127.0.0.1 1090",
    "networksetup -setsecurewebproxy 'USB 10/100/1000 LAN' 127.0.0.1 1090",
    "networksetup -setsocksfirewallproxy 'USB 10/100/1000 LAN' 127.0.0.1 1090",
  ]);
  assert.deepEqual(on(e, '--desktop', 'macos', '--pac', '--service', 'Wi-Fi'), [
    'networksetup -setwebproxystate Wi-Fi off',
    'networksetup -setsecurewebproxystate Wi-Fi off',
    'networksetup -setsocksfirewallproxystate Wi-Fi off',
    `networksetup -setproxybypassdomains Wi-Fi ${MAC_BYPASS}`,
    'networksetup -setautoproxyurl Wi-Fi http://127.0.0.1:1090/proxy.pac',
  ]);
  writeState(e, 'macos', {
    'Wi-Fi': {
      web: { enabled: true, server: 'corp-proxy.example', port: 3128 },
      secure: { enabled: false, server: 'corp-proxy.example', port: 3129 },
      socks: { enabled: false, server: '', port: 0 },
      auto: { enabled: false, url: 'http://wpad.example/wpad.dat' },
      bypass: [],
    },
    Ethernet: {
      web: { enabled: false, server: '', port: 0 },
      secure: { enabled: false, server: '', port: 0 },
      socks: { enabled: false, server: '', port: 0 },
      auto: { enabled: true, url: 'http://wpad.example/wpad.dat' },
      bypass: ['*.corp.example', '10.0.0.0/8'],
    },
  });
  assert.deepEqual(off(e), [
    'networksetup -setwebproxy Wi-Fi corp-proxy.example 3128',
    'networksetup -setsecurewebproxy Wi-Fi corp-proxy.example 3129',
    'networksetup -setsecurewebproxystate Wi-Fi off',
    'networksetup -setsocksfirewallproxystate Wi-Fi off',
    'networksetup -setautoproxyurl Wi-Fi http://wpad.example/wpad.dat',
    'networksetup -setautoproxystate Wi-Fi off',
    'networksetup -setproxybypassdomains Wi-Fi Empty',
    'networksetup -setwebproxystate Ethernet off',
    'networksetup -setsecurewebproxystate Ethernet off',
    'networksetup -setsocksfirewallproxystate Ethernet off',
    'networksetup -setautoproxyurl Ethernet http://wpad.example/wpad.dat',
    "networksetup -setproxybypassdomains Ethernet '*.corp.example' 10.0.0.0/8",
  ]);
});

test('macOS without networksetup and without --service: says how to name the services', (t) => {
  const e = setup(t);
  const r = e.cli('system-proxy', 'on', '--dry-run', '--desktop', 'macos');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /networksetup not found \(macOS only\); name the network services with --service NAME/);
});

test('Windows: reg.exe on HKCU Internet Settings (manual, PAC), WinHTTP with --winhttp; off puts back or deletes each value', (t) => {
  const e = setup(t);
  const key = `"${KEY}"`;
  assert.deepEqual(on(e, '--desktop', 'windows'), [
    `reg add ${key} /v ProxyServer /t REG_SZ /d 127.0.0.1:1090 /f`,
    `reg add ${key} /v ProxyOverride /t REG_SZ /d "${WIN_OVERRIDE}" /f`,
    `reg delete ${key} /v AutoConfigURL /f`,
    `reg add ${key} /v ProxyEnable /t REG_DWORD /d 1 /f`,
  ]);
  assert.deepEqual(on(e, '--desktop', 'windows', '--pac', '--winhttp'), [
    `reg add ${key} /v AutoConfigURL /t REG_SZ /d http://127.0.0.1:1090/proxy.pac /f`,
    `reg add ${key} /v ProxyEnable /t REG_DWORD /d 0 /f`,
    `netsh winhttp set proxy proxy-server=127.0.0.1:1090 "bypass-list=${WIN_OVERRIDE}"`,
  ]);
  writeState(e, 'windows', {
    values: {
      ProxyEnable: { type: 'REG_DWORD', data: '0x1' },
      ProxyServer: { type: 'REG_SZ', data: 'http=corp:3128;https=corp:3128' },
      ProxyOverride: null,
      AutoConfigURL: null,
    },
    winhttp: { direct: false, server: 'corp:3128', bypass: '<local>' },
  });
  assert.deepEqual(off(e), [
    `reg add ${key} /v ProxyEnable /t REG_DWORD /d 1 /f`,
    `reg add ${key} /v ProxyServer /t REG_SZ /d "http=corp:3128;https=corp:3128" /f`,
    `reg delete ${key} /v ProxyOverride /f`,
    `reg delete ${key} /v AutoConfigURL /f`,
    'netsh winhttp set proxy proxy-server=corp:3128 "bypass-list=<local>"',
  ]);
});

test('off without a saved state: nothing to restore, exit 0', (t) => {
  const e = setup(t);
  const r = e.cli('system-proxy', 'off', '--dry-run');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /nothing to restore: no saved settings at .*system-proxy\.json/);
});

test('bad usage: exit 2 with the reason', (t) => {
  const e = setup(t);
  for (const [args, re] of [
    [['system-proxy'], /expected on, off or status/],
    [['system-proxy', 'on', '--pac', '--manual'], /--manual and --pac exclude each other/],
    [['system-proxy', 'on', '--desktop', 'amiga'], /--desktop amiga: expected one of gnome, kde, macos, windows/],
  ] as const) {
    const r = e.cli(...args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, re);
  }
});
