import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Child, run } from '../helpers/proc.js';
import { httpServer } from '../helpers/servers.js';

const cli = new URL('../../src/cli.js', import.meta.url).pathname;

test('holdfast --help lists the commands; start --help explains the options', async () => {
  const main = await run(process.execPath, [cli, '--help']);
  assert.equal(main.code, 0);
  assert.match(main.stdout, /Usage: holdfast <command>/);
  assert.match(main.stdout, /^\s+start\s/m);
  const start = await run(process.execPath, [cli, 'start', '--help']);
  assert.equal(start.code, 0);
  for (const opt of ['--config', '--listen', '--log-level']) assert.ok(start.stdout.includes(opt), opt);
});

test('unknown commands and options exit 2 with a message on stderr', async () => {
  const a = await run(process.execPath, [cli, 'frobnicate'], { allowFail: true });
  assert.equal(a.code, 2);
  assert.match(a.stderr, /unknown command "frobnicate"/);
  const b = await run(process.execPath, [cli, 'start', '--bogus'], { allowFail: true });
  assert.equal(b.code, 2);
  assert.match(b.stderr, /--bogus/);
  const c = await run(process.execPath, [cli, 'start', '--listen', 'nonsense'], { allowFail: true });
  assert.equal(c.code, 2);
  assert.match(c.stderr, /--listen nonsense: expected HOST:PORT/);
});

test('without the addon holdfast still proxies, and says once at start what is lost', async (t) => {
  const srv = await httpServer(t);
  const child = new Child([process.execPath, cli, 'start', '--listen', '127.0.0.1:0'], {
    env: { ...process.env, HOLDFAST_NO_ADDON: '1' },
  });
  t.after(() => child.kill());
  const listening = JSON.parse(await child.waitForLine((l) => l.includes('"listening"'), 10_000, 'the listening line')) as {
    listen: string;
    binder: string;
  };
  assert.equal(listening.binder, 'source');
  const warn = child.lines.filter((l) => l.includes('native addon missing'));
  assert.equal(warn.length, 1);
  assert.equal(JSON.parse(warn[0]).level, 40);
  const r = await run('curl', ['-sS', '--max-time', '5', '--socks5', listening.listen, `http://127.0.0.1:${srv.port}/x`]);
  assert.equal(JSON.parse(r.stdout).url, '/x');
});
