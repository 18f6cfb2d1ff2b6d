// Never strand the desktop (issue 16), with Debian's gsettings and the keyfile backend in a
// temporary HOME, as system-proxy-gnome.test.ts does. holdfast started with --system-proxy is
// killed with SIGKILL (no exit handler runs): the desktop still points at the dead holdfast.
// `holdfast doctor` warns about it; `holdfast system-proxy off` puts back the user's own settings;
// and after another SIGKILL, the next `holdfast start --system-proxy` restores the user's settings
// at its exit, not the stale holdfast setting it found.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { Child } from '../helpers/proc.js';
import { CLI, gnomeDesk, gnomeSkipReason, S } from '../helpers/gnome-desk.js';

/** Start holdfast --system-proxy on a free loopback port; resolves with the child and its port once the desktop points at it. */
async function startHolding(t: TestContext, env: NodeJS.ProcessEnv): Promise<{ child: Child; port: string }> {
  const child = new Child([process.execPath, CLI, 'start', '--listen', '127.0.0.1:0', '--system-proxy', '--log-level', 'info'], { env });
  t.after(() => child.kill());
  const line = await child.waitForLine((l) => l.includes('"msg":"system proxy on"'), 10_000, '"system proxy on"');
  const port = /"proxy":"127\.0\.0\.1:(\d+)"/.exec(line)?.[1];
  assert.ok(port, line);
  return { child, port };
}

async function sigkill(child: Child): Promise<void> {
  process.kill(child.pid, 'SIGKILL');
  const ended = await child.exited;
  assert.equal(ended.signal, 'SIGKILL');
  assert.ok(!child.lines.some((l) => l.includes('"msg":"system proxy restored"')), 'nothing ran at a SIGKILL');
}

test('after a SIGKILL: doctor warns that the desktop points at a dead holdfast; system-proxy off puts back the user\'s own settings', { skip: gnomeSkipReason() }, async (t) => {
  const d = gnomeDesk(t, 'strand', 'GNOME');
  d.gs('set', S, 'mode', 'auto');
  d.gs('set', S, 'autoconfig-url', 'http://wpad.corp.example/wpad.dat');
  d.gs('set', `${S}.http`, 'host', 'corp-proxy.example');
  d.gs('set', `${S}.http`, 'port', '3128');
  const before = d.snapshot();

  const { child, port } = await startHolding(t, d.env);
  const alive = d.cli('doctor', '--json', '--listen', `127.0.0.1:${port}`);
  const aliveChecks = (JSON.parse(alive.stdout) as { checks: Array<{ id: string }> }).checks;
  assert.ok(!aliveChecks.some((c) => c.id === 'system-proxy-answers'), 'no warning while holdfast answers');

  await sigkill(child);
  assert.equal(d.gs('get', S, 'mode'), "'manual'", 'the desktop still points at the dead holdfast');
  assert.equal(d.gs('get', `${S}.http`, 'port'), port);

  // doctor: with the default listener (1080), the dead holdfast is found through the saved state
  const doc = d.cli('doctor', '--json', '--listen', '127.0.0.1:1');
  const checks = (JSON.parse(doc.stdout) as { checks: Array<{ id: string; status: string; summary: string; fix?: string }> }).checks;
  const w = checks.find((c) => c.id === 'system-proxy-answers');
  assert.equal(w?.status, 'warn', JSON.stringify(checks));
  assert.match(w!.summary, new RegExp(`^gnome proxy points at a holdfast that does not answer, so apps that follow it have no network: gnome: manual -> 127\\.0\\.0\\.1:${port} \\(no answer: ECONNREFUSED\\)$`));
  assert.match(w!.fix!, /^holdfast system-proxy off \(puts back your own settings, saved in .*system-proxy\.json\)/);

  const off = d.cli('system-proxy', 'off');
  assert.equal(off.code, 0, off.stderr);
  assert.equal(d.snapshot(), before, 'the user\'s own settings, every key');
  assert.ok(!existsSync(d.state));
  const after = d.cli('doctor', '--json', '--listen', `127.0.0.1:${port}`);
  assert.ok(!(JSON.parse(after.stdout) as { checks: Array<{ id: string }> }).checks.some((c) => c.id === 'system-proxy-answers'));
});

test('after a SIGKILL, the next holdfast start --system-proxy restores the user\'s settings at its exit, not the stale holdfast one', { skip: gnomeSkipReason() }, async (t) => {
  const d = gnomeDesk(t, 'strand', 'GNOME');
  d.gs('set', S, 'mode', 'none');
  d.gs('set', S, 'ignore-hosts', "['localhost', '*.home.example']");
  d.gs('set', `${S}.socks`, 'host', 'old-socks.example');
  d.gs('set', `${S}.socks`, 'port', '9050');
  const before = d.snapshot();

  const first = await startHolding(t, d.env);
  await sigkill(first.child);
  const saved = readFileSync(d.state, 'utf8');
  assert.equal((JSON.parse(saved) as { previous: Record<string, string> }).previous[`${S} mode`], "'none'");

  // killed again, twice in a row: the saved copy stays the user's
  const second = await startHolding(t, d.env);
  assert.notEqual(second.port, first.port);
  assert.equal(d.gs('get', `${S}.http`, 'port'), second.port, 'points at the new holdfast');
  await sigkill(second.child);
  assert.deepEqual((JSON.parse(readFileSync(d.state, 'utf8')) as { previous: unknown }).previous, (JSON.parse(saved) as { previous: unknown }).previous);

  const third = await startHolding(t, d.env);
  process.kill(third.child.pid, 'SIGTERM');
  const ended = await third.child.exited;
  assert.equal(ended.code, 0, third.child.stderrLines.join(' '));
  assert.equal(d.snapshot(), before, 'the user\'s own settings, not a dead holdfast\'s');
  assert.ok(!existsSync(d.state));
});
