// GNOME for real: Debian's gsettings with the keyfile backend in a temporary HOME. `on` points
// org.gnome.system.proxy at holdfast, `on` again keeps the first saved copy, `off` puts back every
// value exactly as it was (compared with `gsettings list-recursively`, before and after), and
// `holdfast start --system-proxy` does the same around the proxy's life, on SIGTERM and SIGINT.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { test } from 'node:test';
import { Child } from '../helpers/proc.js';
import { CLI, gnomeDesk, gnomeSkipReason, S, type Desk } from '../helpers/gnome-desk.js';

/** Settings a user might have: a corporate PAC, a manual proxy behind it, a custom ignore list. */
function preset(d: Desk): void {
  d.gs('set', S, 'autoconfig-url', 'http://wpad.corp.example/wpad.dat');
  d.gs('set', S, 'ignore-hosts', "['localhost', '*.corp.example', '10.0.0.0/8']");
  d.gs('set', `${S}.http`, 'host', 'corp-proxy.example');
  d.gs('set', `${S}.http`, 'port', '3128');
  d.gs('set', `${S}.socks`, 'host', 'socks.corp.example');
  d.gs('set', `${S}.socks`, 'port', '1081');
  d.gs('set', S, 'mode', 'auto');
}

test('system-proxy on (manual, then pac) sets org.gnome.system.proxy; off restores every value exactly', { skip: gnomeSkipReason() }, (t) => {
  const d = gnomeDesk(t, 'gnome', 'ubuntu:GNOME');
  preset(d);
  const before = d.snapshot();
  assert.match(before, /^org\.gnome\.system\.proxy mode 'auto'$/m);

  const on = d.cli('system-proxy', 'on', '--manual', '--listen', '127.0.0.1:1090');
  assert.equal(on.code, 0, on.stderr);
  assert.match(on.stderr, /points at 127\.0\.0\.1:1090; previous settings saved/);
  assert.equal(d.gs('get', S, 'mode'), "'manual'");
  for (const sub of ['http', 'https', 'socks']) {
    assert.equal(d.gs('get', `${S}.${sub}`, 'host'), "'127.0.0.1'", sub);
    assert.equal(d.gs('get', `${S}.${sub}`, 'port'), '1090', sub);
  }
  assert.equal(
    d.gs('get', S, 'ignore-hosts'),
    "['localhost', '127.0.0.0/8', '::1', '*.local', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', 'fe80::/10']",
  );
  const st = d.cli('system-proxy', 'status', '--json', '--listen', '127.0.0.1:1090');
  assert.equal(st.code, 0, st.stderr);
  const report = JSON.parse(st.stdout) as { desktop: string; changedByHoldfast: { mode: string } | null; settings: Array<{ mode: string; http: string; pointsAtHoldfast: boolean }> };
  assert.equal(report.desktop, 'gnome');
  assert.equal(report.changedByHoldfast?.mode, 'manual');
  assert.deepEqual([report.settings[0].mode, report.settings[0].http, report.settings[0].pointsAtHoldfast], ['manual', '127.0.0.1:1090', true]);
  // holdfast doctor reads the same setting
  const doc = d.cli('doctor', '--json', '--listen', '127.0.0.1:1090');
  const sp = (JSON.parse(doc.stdout) as { checks: Array<{ id: string; status: string; summary: string }> }).checks.find((c) => c.id === 'system-proxy');
  assert.equal(sp?.status, 'ok', JSON.stringify(sp));
  assert.equal(sp?.summary, 'gnome proxy points at holdfast (gnome: manual)');

  // on again, as PAC: the saved copy stays the user's, not holdfast's manual setting
  const pac = d.cli('system-proxy', 'on', '--pac', '--listen', '127.0.0.1:1090');
  assert.equal(pac.code, 0, pac.stderr);
  assert.match(pac.stderr, /the settings saved by an earlier `on` are kept/);
  assert.equal(d.gs('get', S, 'mode'), "'auto'");
  assert.equal(d.gs('get', S, 'autoconfig-url'), "'http://127.0.0.1:1090/proxy.pac'");
  const saved = JSON.parse(readFileSync(d.state, 'utf8')) as { previous: Record<string, string> };
  assert.equal(saved.previous[`${S} autoconfig-url`], "'http://wpad.corp.example/wpad.dat'");
  assert.equal(saved.previous[`${S}.http host`], "'corp-proxy.example'");

  const off = d.cli('system-proxy', 'off');
  assert.equal(off.code, 0, off.stderr);
  assert.equal(d.snapshot(), before, 'every key of org.gnome.system.proxy is as it was');
  assert.ok(!existsSync(d.state), 'the state file is gone');

  const again = d.cli('system-proxy', 'off');
  assert.equal(again.code, 0);
  assert.match(again.stderr, /nothing to restore/);
  assert.equal(d.snapshot(), before);
});

test('holdfast start --system-proxy: on while it runs, restored on SIGTERM and on SIGINT', { skip: gnomeSkipReason() }, async (t) => {
  const d = gnomeDesk(t, 'gnome', 'ubuntu:GNOME');
  preset(d);
  const before = d.snapshot();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    const child = new Child([process.execPath, CLI, 'start', '--listen', '127.0.0.1:0', '--system-proxy', '--log-level', 'info'], { env: d.env });
    t.after(() => child.kill());
    const line = await child.waitForLine((l) => l.includes('"msg":"system proxy on"'), 10_000, '"system proxy on"');
    const port = /"proxy":"127\.0\.0\.1:(\d+)"/.exec(line)?.[1];
    assert.ok(port, line);
    assert.equal(d.gs('get', S, 'mode'), "'manual'");
    assert.equal(d.gs('get', `${S}.http`, 'port'), port);
    assert.ok(existsSync(d.state));
    process.kill(child.pid, sig);
    const ended = await child.exited;
    assert.equal(ended.code, 0, `${sig}: exit ${ended.code ?? ended.signal}: ${child.stderrLines.join(' ')}`);
    assert.ok(child.lines.some((l) => l.includes('"msg":"system proxy restored"') && l.includes('"restored":true')), `${sig}: restored line`);
    assert.equal(d.snapshot(), before, `${sig}: settings as before`);
    assert.ok(!existsSync(d.state));
  }
});

test('no desktop detected: a clear error naming --desktop', { skip: gnomeSkipReason() }, (t) => {
  const d = gnomeDesk(t, 'gnome', 'ubuntu:GNOME');
  d.env.XDG_CURRENT_DESKTOP = 'XFCE';
  const r = d.cli('system-proxy', 'on');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cannot tell the desktop \(XDG_CURRENT_DESKTOP=XFCE\); pass --desktop gnome\|kde\|macos\|windows/);
  const forced = d.cli('system-proxy', 'on', '--desktop', 'gnome', '--dry-run', '--listen', '127.0.0.1:1090');
  assert.equal(forced.code, 0, forced.stderr);
  assert.match(forced.stdout, /^gsettings set org\.gnome\.system\.proxy mode "'manual'"$/m);
  assert.ok(!existsSync(d.state), 'a dry run saves nothing');
});

test('settings saved for another desktop are never overwritten: on refuses until off restored them', { skip: gnomeSkipReason() }, (t) => {
  const d = gnomeDesk(t, 'gnome', 'ubuntu:GNOME');
  mkdirSync(dirname(d.state), { recursive: true });
  const kde = JSON.stringify({ version: 1, desktop: 'kde', mode: 'manual', endpoint: { host: '127.0.0.1', port: 1080 }, savedAt: 'x', previous: { tool: 'kwriteconfig5', values: {} } });
  writeFileSync(d.state, kde);
  const before = d.snapshot();
  const r = d.cli('system-proxy', 'on', '--listen', '127.0.0.1:1090');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /holds the kde settings saved by an earlier `on`: run `holdfast system-proxy off` first/);
  assert.equal(readFileSync(d.state, 'utf8'), kde);
  assert.equal(d.snapshot(), before, 'nothing was changed');
});
