// The dialer itself (createDialer, without the addon: source binding, which needs no privilege),
// against real loopback sockets: a dial resolves once connected and tells onDialed first; a
// refused port is its own error; a dial called off (Cancel or AbortSignal, before or just after
// it began) rejects with the reason and leaves no socket; an onDialed that throws still settles
// the dial. The addon's path is the same object with a socket made in C (native-addon.test.ts).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Cancel } from '../../src/cancel.js';
import type { CancelSignal, Egress, Target } from '../../src/contracts.js';
import { createDialer } from '../../src/egress/dial.js';
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
