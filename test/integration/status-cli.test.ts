// `holdfast status` (the real CLI, a child process) against a running holdfast on loopback: the
// interfaces and the live flows, --json, the config's listener as the default URL, --watch, and a
// clear message with exit status 1 when nothing (or something else) answers at the URL.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { StatusJson } from '../../src/observe/status.js';
import { Child, pollUntil, run } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { closedPort, echoServer, httpServer } from '../helpers/servers.js';
import { readN, socksRequest } from '../helpers/socks-client.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

function status(args: string[]) {
  return run(process.execPath, [CLI, 'status', ...args], { timeoutMs: 10_000, allowFail: true });
}

/** The cells of the table row (in the section after `section`) whose text includes `needle`. */
function rowOf(out: string, section: 'INTERFACES' | 'FLOWS', needle: string): string[] | undefined {
  const lines = out.split('\n');
  const from = lines.indexOf(section);
  for (let i = from + 2; i < lines.length && lines[i] !== ''; i++) {
    if (lines[i].includes(needle)) return lines[i].trim().split(/\s{2,}/);
  }
  return undefined;
}

test('holdfast status lists the interfaces and the live flows of a running holdfast', async (t) => {
  const p = await startProxy(t);
  const echo = await echoServer(t);
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  socket.write('x'.repeat(900));
  await readN(socket, 900);

  const r = await status(['--url', p.url]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, new RegExp(`^holdfast at ${p.url.replace(/[.[\]]/g, '\\$&')}, up \\d+s, pinning by (device|source address only)\n`));
  assert.match(r.stdout, /1 live flow, 1 opened, 0 cut/);
  const lo = rowOf(r.stdout, 'INTERFACES', 'lo ');
  assert.ok(lo, `an interface row for lo:\n${r.stdout}`);
  assert.deepEqual(lo.slice(0, 4), ['lo', 'up', '-', '127.0.0.1/8']);
  assert.equal(lo[5], '1', 'one flow pinned to lo');
  const flow = rowOf(r.stdout, 'FLOWS', `127.0.0.1:${echo.port}`);
  assert.ok(flow, `a flow row for the echo server:\n${r.stdout}`);
  assert.deepEqual(flow.slice(0, 5), ['1', 'socks5-connect', `127.0.0.1:${echo.port}`, 'lo', 'route']);
  assert.match(flow[5], /^\d+s$/, 'age');
  assert.equal(flow[6], '900 B', 'bytes down');
  assert.equal(flow[7], '900 B', 'bytes up');
  assert.match(flow[8], /B\/s$/, 'rate down');
  assert.doesNotMatch(r.stdout, /\x1b\[/, 'no colour when stdout is not a terminal');

  const j = await status(['--json', '--url', p.url]);
  assert.equal(j.code, 0, j.stderr);
  const st = JSON.parse(j.stdout) as StatusJson;
  assert.equal(st.flows.length, 1);
  assert.equal(st.flows[0].dst, `127.0.0.1:${echo.port}`);
  assert.equal(st.flows[0].egress, 'lo');
  assert.equal(st.flows[0].bytesDown, 900);
  assert.equal(typeof st.flows[0].rateDown, 'number');
  assert.ok(st.interfaces.some((i) => i.name === 'lo' && i.flows === 1));
});

test('holdfast status without --url asks the first listener of the config', async (t) => {
  const p = await startProxy(t);
  const dir = mkdtempSync(join(tmpdir(), 'hf-status-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'holdfast.yaml');
  writeFileSync(cfg, `listen:\n  - 127.0.0.1:${p.port}\n  - 127.0.0.1:1\n`);
  const r = await status(['--config', cfg]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^holdfast at http://127\\.0\\.0\\.1:${p.port},`));
  assert.match(r.stdout, /\nINTERFACES\n/);
});

test('holdfast status says clearly that nothing runs at the URL, and exits 1', async () => {
  const port = await closedPort();
  const r = await status(['--url', `127.0.0.1:${port}`]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.equal(
    r.stderr,
    `holdfast: no holdfast is running at http://127.0.0.1:${port} (connection refused); start one with \`holdfast start\`\n`,
  );
});

test('holdfast status against something that is not holdfast: a clear message and exit 1', async (t) => {
  const other = await httpServer(t, (_req, res) => {
    res.writeHead(404).end('nope');
  });
  const r = await status(['--url', `http://127.0.0.1:${other.port}`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^holdfast: http:\/\/127\.0\.0\.1:\d+\/status answered 404: is this holdfast\?\n$/);
  const json = await httpServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":1}');
  });
  const r2 = await status(['--url', `http://127.0.0.1:${json.port}`]);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /did not answer with holdfast's status JSON/);
});

test('holdfast status usage errors exit 2', async () => {
  const r = await status(['--url', 'ftp://127.0.0.1:1080']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /holdfast answers plain http:\/\//);
  const r2 = await status(['--bogus']);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /Usage: holdfast status/);
  const h = await status(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--watch/);
});

test('holdfast status --watch redraws every second, reports when holdfast goes away, stops on a signal', async (t) => {
  const p = await startProxy(t);
  const child = new Child([process.execPath, CLI, 'status', '--watch', '--url', p.url]);
  t.after(() => child.kill());
  const draws = () => child.lines.filter((l) => l.startsWith('holdfast at ')).length;
  const t0 = Date.now();
  await pollUntil(() => (draws() >= 3 ? true : undefined), { timeoutMs: 6000, what: 'three redraws' });
  const took = Date.now() - t0;
  assert.ok(took >= 1500, `three draws take about two seconds, not ${took} ms`);

  await p.hf.close();
  await pollUntil(() => (child.lines.some((l) => l.startsWith('holdfast: no holdfast is running')) ? true : undefined), {
    timeoutMs: 5000,
    what: 'the "no holdfast" message in watch mode',
  });
  assert.ok(child.running, 'watch keeps trying after holdfast went away');
  child.proc.kill('SIGINT');
  const { code } = await child.exited;
  assert.equal(code, 0, 'Ctrl-C ends watch mode normally');
});
