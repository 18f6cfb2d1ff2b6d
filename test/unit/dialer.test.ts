// The dialer itself (createDialer, without the addon: source binding, which needs no privilege),
// against real loopback sockets: a dial resolves once connected and tells onDialed first; a
// refused port is its own error; a dial called off (Cancel or AbortSignal, before or just after
// it began) rejects with the reason and leaves no socket; an onDialed that throws still settles
// the dial. The addon's path is the same object with a socket made in C (native-addon.test.ts).
// upstreamSocket: the options every upstream socket is made with, and what they are for (one
// hidden class for Node's copy of them: V8's IC log counts the misses).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cancel } from '../../src/cancel.js';
import type { CancelSignal, Egress, Target } from '../../src/contracts.js';
import { createDialer, upstreamSocket } from '../../src/egress/dial.js';
import { HfCode, hfCodeOf } from '../../src/errors.js';
import { closedPort, tcpServer } from '../helpers/servers.js';

const egress: Egress = { ifname: 'lo', source: '127.0.0.1', family: 4, placedBy: 'route' };

/** A loopback server that keeps the sockets it accepted (closed at the test's end). */
async function server(t: TestContext): Promise<{ port: number; accepted: Socket[] }> {
  const accepted: Socket[] = [];
  const { port } = await tcpServer(t, (s) => accepted.push(s));
  return { port, accepted };
}

test('dialer: resolves with a connected socket, and tells onDialed before it resolves', async (t) => {
  const { port } = await server(t);
  const seen: [Socket, Target][] = [];
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 1000 }, undefined, { onDialed: (s, tg) => seen.push([s, tg]) });
  const target: Target = { ip: '127.0.0.1', family: 4, port };
  const pending = dialer.dial(target, egress, new Cancel());
  assert.equal(seen.length, 0, 'not before the connect');
  const s = await pending;
  t.after(() => s.destroy());
  assert.equal(seen.length, 1);
  assert.equal(seen[0][0], s);
  assert.deepEqual(seen[0][1], target);
  assert.equal(s.remotePort, port);
  assert.equal(s.localAddress, '127.0.0.1');
  assert.equal(s.listenerCount('connect'), 0, "the dial's listeners are gone");
  assert.equal(s.listenerCount('error'), 0);
});

test('dialer: a refused port is HF_REFUSED, naming the attempt; onDialed is not told', async (t) => {
  const { port } = await server(t);
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 0 }, undefined, { onDialed: () => assert.fail('not dialed') });
  const closed = await closedPort();
  assert.notEqual(closed, port);
  await assert.rejects(dialer.dial({ ip: '127.0.0.1', family: 4, port: closed }, egress), (err) => {
    assert.equal(hfCodeOf(err), HfCode.REFUSED);
    assert.match((err as Error).message, new RegExp(`connect 127\\.0\\.0\\.1:${closed} via lo \\(127\\.0\\.0\\.1\\)`));
    return true;
  });
});

test('dialer: called off before or right after it began, with either kind of signal: rejects with the reason', async (t) => {
  const { port } = await server(t);
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 0 }, undefined, { onDialed: () => assert.fail('not dialed') });
  const kinds: [string, () => { signal: CancelSignal; abort(e: Error): void }][] = [
    ['Cancel', () => { const c = new Cancel(); return { signal: c, abort: (e) => c.abort(e) }; }],
    ['AbortController', () => { const c = new AbortController(); return { signal: c.signal, abort: (e) => c.abort(e) }; }],
  ];
  for (const [name, make] of kinds) {
    const before = make();
    const why = new Error(`client left (${name}, before)`);
    before.abort(why);
    await assert.rejects(dialer.dial({ ip: '127.0.0.1', family: 4, port }, egress, before.signal), (err) => err === why);
    const after = make();
    const why2 = new Error(`client left (${name}, after)`);
    const pending = dialer.dial({ ip: '127.0.0.1', family: 4, port }, egress, after.signal);
    after.abort(why2);
    await assert.rejects(pending, (err) => err === why2);
  }
});

test('dialer: an onDialed that throws fails that dial and closes its socket', async (t) => {
  const { port, accepted } = await server(t);
  const bug = new Error('observer bug');
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 0 }, undefined, {
    onDialed: () => {
      throw bug;
    },
  });
  await assert.rejects(dialer.dial({ ip: '127.0.0.1', family: 4, port }, egress), (err) => err === bug);
  // the server sees the connection, then its end
  const deadline = Date.now() + 5000;
  while (accepted.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(accepted.length, 1);
  const s = accepted[0];
  if (!s.readableEnded) {
    s.resume();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the dialed socket was not closed')), 5000);
      s.once('end', () => (clearTimeout(timer), resolve()));
      s.once('close', () => (clearTimeout(timer), resolve()));
    });
  }
});

test('upstreamSocket: half-open, and the stream settings Node forces, spelled out', (t) => {
  const s = upstreamSocket(undefined);
  t.after(() => s.destroy());
  assert.equal(s.allowHalfOpen, true);
  // what net.Socket sets on its copy of the options whatever it is given: ours must agree with it,
  // or the copy would change (and the options would not be what the comment says they are)
  const rs = (s as unknown as { _readableState: { autoDestroy: boolean; emitClose: boolean } })._readableState;
  const ws = (s as unknown as { _writableState: { decodeStrings: boolean; emitClose: boolean } })._writableState;
  assert.equal(rs.autoDestroy, true);
  assert.equal(rs.emitClose, false);
  assert.equal(ws.emitClose, false);
  assert.equal(ws.decodeStrings, false);
  assert.equal(s.pending, true, 'no handle until the connect');
});

// net.Socket copies its options and adds three properties to the copy; on Node 20 (V8 11) a copy
// of options that lack them gets a hidden class of its own, and each socket then misses about 30
// inline caches. upstreamSocket passes them all: V8's own IC log (--log-ic) counts the misses
// while a child process makes sockets, and the sockets after the first hundred must add almost none.
test('upstreamSocket: sockets after the first ones add (almost) no inline-cache misses', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hf-ic-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dial = new URL('../../src/egress/dial.js', import.meta.url).href;
  let runs = 0;
  const misses = (n: number, make: string): number => {
    const log = join(dir, `ic-${++runs}.log`);
    const script = `import { Socket } from 'node:net'; import { upstreamSocket } from ${JSON.stringify(dial)};
      for (let i = 0; i < ${n}; i++) (${make}).destroy();`;
    const r = spawnSync(process.execPath, ['--log-ic', `--logfile=${log}`, '--no-logfile-per-isolate', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(existsSync(log), `node ${process.version} wrote no --log-ic log`);
    return readFileSync(log, 'utf8').split('\n').filter((l) => /^(Keyed)?(Load|Store)IC,/.test(l)).length;
  };
  const perSocket = (make: string) => (misses(500, make) - misses(100, make)) / 400;
  const ours = perSocket('upstreamSocket(undefined)');
  const bare = perSocket('new Socket({ allowHalfOpen: true })');
  t.diagnostic(`IC misses per socket on node ${process.version}: upstreamSocket ${ours.toFixed(2)}, new Socket({ allowHalfOpen: true }) ${bare.toFixed(2)}`);
  assert.ok(ours < 3, `upstreamSocket: ${ours.toFixed(2)} IC misses per socket`);
});
