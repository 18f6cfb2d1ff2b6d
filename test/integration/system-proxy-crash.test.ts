// Never strand the desktop (issue 16), with Debian's gsettings and the keyfile backend in a
// temporary HOME, as system-proxy-gnome.test.ts does. holdfast started with --system-proxy is
// killed with SIGKILL (no exit handler runs): the desktop still points at the dead holdfast.
// `holdfast doctor` warns about it; `holdfast system-proxy off` puts back the user's own settings;
// and after another SIGKILL, the next `holdfast start --system-proxy` restores the user's settings
// at its exit, not the stale holdfast setting it found.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { onPath } from '../../src/system/proxy.js';
import { Child } from '../helpers/proc.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const S = 'org.gnome.system.proxy';

function skipReason(): string | undefined {
  let why: string | undefined;
  if (!onPath('gsettings')) why = 'needs gsettings (apt install libglib2.0-bin)';
  else if (spawnSync('gsettings', ['list-keys', S], { env: { ...process.env, GSETTINGS_BACKEND: 'memory' } }).status !== 0)
    why = `needs the ${S} schema (apt install gsettings-desktop-schemas)`;
  if (!why) return undefined;
  if (process.env.CI === 'true') throw new Error(`CI=true but the GNOME test ${why}`);
  console.log(`# skip: ${why}`);
  return why;
}

function desk(t: TestContext) {
  const home = mkdtempSync(join(tmpdir(), `hf${process.pid}-strand-`));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_STATE_HOME: join(home, '.local', 'state'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    GSETTINGS_BACKEND: 'keyfile',
    XDG_CURRENT_DESKTOP: 'GNOME',
  };
  const gs = (...args: string[]) => {
    const r = spawnSync('gsettings', args, { env, encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, `gsettings ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 20_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const state = join(home, '.local', 'state', 'holdfast', 'system-proxy.json');
  return { env, gs, cli, state, snapshot: () => gs('list-recursively', S) };
}

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

test('after a SIGKILL: doctor warns that the desktop points at a dead holdfast; system-proxy off puts back the user\'s own settings', { skip: skipReason() }, async (t) => {
  const d = desk(t);
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

test('after a SIGKILL, the next holdfast start --system-proxy restores the user\'s settings at its exit, not the stale holdfast one', { skip: skipReason() }, async (t) => {
  const d = desk(t);
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
