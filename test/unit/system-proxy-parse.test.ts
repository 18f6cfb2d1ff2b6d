// The pure parts of the system-proxy backends: reading each tool's output (captured from the real
// programs' documented formats), desktop detection, command display, spellings of the bypass list,
// KDE's kioslaverc read back from a file, and which setting "points at holdfast".
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultBypass } from '../../src/config.js';
import { parseBypass } from '../../src/pac.js';
import { gvString, gvStringArray, parseGvStringArray } from '../../src/system/proxy-gnome.js';
import { kdeBackend, readKConfigGroup } from '../../src/system/proxy-kde.js';
import { parseAutoProxy, parseBypassDomains, parseProxy, parseServices } from '../../src/system/proxy-macos.js';
import { parseRegQuery, parseWinHttp, proxyOverride } from '../../src/system/proxy-windows.js';
import { bypassPatterns, detectDesktop, formatCommand, pointsAt, statePath, type Exec } from '../../src/system/proxy.js';

test('detectDesktop: platform first, then XDG_CURRENT_DESKTOP (or DESKTOP_SESSION)', () => {
  assert.equal(detectDesktop({}, 'win32'), 'windows');
  assert.equal(detectDesktop({ XDG_CURRENT_DESKTOP: 'KDE' }, 'darwin'), 'macos');
  for (const d of ['GNOME', 'ubuntu:GNOME', 'X-Cinnamon', 'MATE', 'Budgie:GNOME', 'Unity', 'Pantheon']) assert.equal(detectDesktop({ XDG_CURRENT_DESKTOP: d }, 'linux'), 'gnome', d);
  assert.equal(detectDesktop({ XDG_CURRENT_DESKTOP: 'KDE' }, 'linux'), 'kde');
  assert.equal(detectDesktop({ DESKTOP_SESSION: 'plasma' }, 'linux'), 'kde');
  assert.equal(detectDesktop({ XDG_CURRENT_DESKTOP: 'XFCE' }, 'linux'), undefined);
  assert.equal(detectDesktop({}, 'linux'), undefined);
});

test('statePath: $XDG_STATE_HOME/holdfast, else ~/.local/state/holdfast', () => {
  assert.equal(statePath({ XDG_STATE_HOME: '/s', HOME: '/h' }), '/s/holdfast/system-proxy.json');
  assert.equal(statePath({ HOME: '/h' }), '/h/.local/state/holdfast/system-proxy.json');
});

test('formatCommand quotes only what a shell would split or expand', () => {
  assert.equal(formatCommand(['gsettings', 'set', 'a.b', 'mode', "'manual'"]), `gsettings set a.b mode "'manual'"`);
  assert.equal(formatCommand(['x', 'two words', '*.local', "it's $x"]), `x 'two words' '*.local' 'it'\\''s $x'`);
  assert.equal(formatCommand(['reg', 'add', 'HKCU\\A B', '/d', 'a;b'], 'windows'), 'reg add "HKCU\\A B" /d "a;b"');
});

test('GVariant strings and string arrays round-trip', () => {
  assert.equal(gvString("it's \\ here"), "'it\\'s \\\\ here'");
  assert.equal(gvStringArray([]), '@as []');
  const list = ['localhost', "o'neil", '*.local'];
  assert.deepEqual(parseGvStringArray(gvStringArray(list)), list);
  assert.deepEqual(parseGvStringArray('@as []'), []);
});

test('bypass spellings: desktop patterns and WinINet ProxyOverride', () => {
  const rules = parseBypass([...defaultBypass, '<local>', '100.64.0.0/10', '2001:db8::/32', '198.51.100.7']);
  assert.deepEqual(bypassPatterns(rules, '*.').slice(0, 4), ['localhost', '127.0.0.0/8', '::1', '*.local']);
  assert.deepEqual(bypassPatterns(rules, '.')[3], '.local');
  const ov = proxyOverride(rules);
  assert.ok(ov.includes('<local>') && ov.includes('10.*') && ov.includes('172.31.*') && !ov.includes('172.32.*'));
  assert.ok(ov.includes('100.64.*') && ov.includes('100.127.*') && !ov.includes('100.128.*'), '/10 as 64 second-octet wildcards');
  assert.ok(ov.includes('198.51.100.7') && ov.includes('[::1]'));
  assert.ok(!ov.some((s) => s.includes('2001:db8') || s.includes('fe80')), 'IPv6 ranges have no spelling there');
});

test('networksetup output: services (disabled ones left out), proxies, auto proxy, bypass domains', () => {
  assert.deepEqual(parseServices('An asterisk (*) denotes that a network service is disabled.\nWi-Fi\n*Bluetooth PAN\nUSB 10/100/1000 LAN\n'), ['Wi-Fi', 'USB 10/100/1000 LAN']);
  assert.deepEqual(parseProxy('Enabled: Yes\nServer: proxy.corp\nPort: 3128\nAuthenticated Proxy Enabled: 0\n'), { enabled: true, server: 'proxy.corp', port: 3128 });
  assert.deepEqual(parseProxy('Enabled: No\nServer: \nPort: 0\nAuthenticated Proxy Enabled: 0\n'), { enabled: false, server: '', port: 0 });
  assert.deepEqual(parseAutoProxy('URL: (null)\nEnabled: No\n'), { enabled: false, url: null });
  assert.deepEqual(parseAutoProxy('URL: http://wpad/wpad.dat\nEnabled: Yes\n'), { enabled: true, url: 'http://wpad/wpad.dat' });
  assert.deepEqual(parseBypassDomains("There aren't any bypass domains set on Wi-Fi.\n"), []);
  assert.deepEqual(parseBypassDomains('*.local\n169.254/16\n'), ['*.local', '169.254/16']);
});

test('reg query and netsh winhttp output', () => {
  const reg = [
    '',
    'HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings',
    '    User Agent    REG_SZ    Mozilla/4.0 (compatible; MSIE 8.0; Win32)',
    '    ProxyEnable    REG_DWORD    0x1',
    '    ProxyServer    REG_SZ    127.0.0.1:3128',
    '    ProxyOverride    REG_SZ    <local>',
    '',
    'HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings\\5.0',
  ].join('\r\n');
  const m = parseRegQuery(reg);
  assert.deepEqual(m.get('ProxyEnable'), { type: 'REG_DWORD', data: '0x1' });
  assert.deepEqual(m.get('User Agent'), { type: 'REG_SZ', data: 'Mozilla/4.0 (compatible; MSIE 8.0; Win32)' });
  assert.equal(m.get('AutoConfigURL'), undefined);
  assert.deepEqual(parseWinHttp('\r\nCurrent WinHTTP proxy settings:\r\n\r\n    Direct access (no proxy server).\r\n'), { direct: true });
  assert.deepEqual(parseWinHttp('Current WinHTTP proxy settings:\n\n    Proxy Server(s) :  127.0.0.1:1080\n    Bypass List     :  <local>;*.corp\n'), {
    direct: false,
    server: '127.0.0.1:1080',
    bypass: '<local>;*.corp',
  });
});

test('KDE: kioslaverc read back from the file; absent keys saved as null and deleted on restore', () => {
  const text = '[General]\nProxyType=9\n\n[Proxy Settings]\nProxyType=1\nhttpProxy=http://corp 3128\nNoProxyFor=\\slocalhost,.corp\nhttpProxy[de]=ignored\n';
  const g = readKConfigGroup(text, 'Proxy Settings');
  assert.equal(g.get('ProxyType'), '1');
  assert.equal(g.get('httpProxy'), 'http://corp 3128');
  assert.equal(g.get('NoProxyFor'), ' localhost,.corp');

  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-kde-`));
  try {
    writeFileSync(join(dir, 'kioslaverc'), text);
    const exec: Exec = () => ({ code: 1, stdout: '', stderr: 'not run' });
    const ctx = { exec, env: { XDG_CONFIG_HOME: dir, KDE_SESSION_VERSION: '6', PATH: '' } };
    const saved = kdeBackend.save(ctx);
    assert.equal(saved.tool, 'kwriteconfig6');
    assert.deepEqual(saved.values, {
      ProxyType: '1',
      httpProxy: 'http://corp 3128',
      httpsProxy: null,
      socksProxy: null,
      NoProxyFor: ' localhost,.corp',
      ReversedException: null,
      'Proxy Config Script': null,
    });
    const cur = kdeBackend.current(ctx)[0];
    assert.equal(cur.mode, 'manual');
    assert.equal(cur.http, 'corp:3128');
    const restore = kdeBackend.restore(ctx, saved).map((c) => c.argv.slice(6).join(' '));
    assert.deepEqual(restore.slice(0, 3), ['ProxyType 1', 'httpProxy http://corp 3128', 'httpsProxy --delete']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pointsAt: manual host:port or the /proxy.pac URL of the listener (loopback names alike)', () => {
  const ep = { host: '127.0.0.1', port: 1080 };
  assert.ok(pointsAt({ scope: 'x', mode: 'manual', http: '127.0.0.1:1080' }, ep));
  assert.ok(pointsAt({ scope: 'x', mode: 'manual', http: 'localhost:1080' }, ep));
  assert.ok(pointsAt({ scope: 'x', mode: 'manual', socks: '127.0.0.1:1080' }, ep));
  assert.ok(!pointsAt({ scope: 'x', mode: 'manual', http: '127.0.0.1:3128' }, ep));
  assert.ok(pointsAt({ scope: 'x', mode: 'pac', pacUrl: 'http://127.0.0.1:1080/proxy.pac' }, ep));
  assert.ok(!pointsAt({ scope: 'x', mode: 'pac', pacUrl: 'http://wpad/wpad.dat' }, ep));
  assert.ok(!pointsAt({ scope: 'x', mode: 'none' }, ep));
  assert.ok(pointsAt({ scope: 'x', mode: 'manual', http: '[::1]:1090' }, { host: '::1', port: 1090 }));
});
