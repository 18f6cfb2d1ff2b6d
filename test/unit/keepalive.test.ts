// Keepalive on upstream sockets, set once a flow has lived a while (src/keepalive.ts): a socket
// gets it one to two periods after it was added, never before one; one closed by then gets none,
// and one the relay saw close (it calls keepAliveForget) is let go of at once; keepAliveNow
// (before a tunnel goes to the native relay) sets it at once, and only once; close() drops the
// rest. Then the dialer with the addon's pinned sockets, on loopback: a new upstream has no
// keepalive timer, and has one (with dial.keepAlive's idle) a little later, as the kernel shows.
// The handoffs' own calls are checked in relay-offload and forward-offload.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Egress, Target } from '../../src/contracts.js';
import { createDialer } from '../../src/egress/dial.js';
import { LateKeepAlive, keepAliveForget, keepAliveNow } from '../../src/keepalive.js';
import { relay, type RelayEnd } from '../../src/relay.js';
import { addon, needsAddon } from '../helpers/addon.js';
import { keepaliveOf } from '../helpers/keepalive.js';
import { pollUntil } from '../helpers/proc.js';
import { tcpServer } from '../helpers/servers.js';

/** `n` connected client sockets to a loopback server, closed at the test's end. */
async function connected(t: TestContext, n: number): Promise<{ port: number; sockets: Socket[] }> {
  const { port } = await tcpServer(t, () => {});
  const sockets: Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < n; i++) {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    sockets.push(s);
    await once(s, 'connect');
  }
  return { port, sockets };
}

test('late keepalive: set one to two periods after add, on open sockets only; keepAliveNow at once, once', async (t) => {
  const { sockets } = await connected(t, 5);
  const [a, b, c, d, e] = sockets;
  const set: { socket: Socket; ms: number; at: number }[] = [];
  const periodMs = 60;
  const late = new LateKeepAlive((socket, ms) => set.push({ socket, ms, at: performance.now() }), periodMs);
  t.after(() => late.close());

  const added = performance.now();
  late.add(a, 5000);
  late.add(b, 7000);
  late.add(c, 9000);
  late.add(e, 4000);
  assert.equal(set.length, 0, 'nothing is set at the add');
  assert.equal(late.size, 4);
  b.destroy(); // a flow that ended before its keepalive came
  keepAliveForget(e); // one whose relay saw it close: let go of at once
  assert.equal(late.size, 3, 'a forgotten socket is no longer held');
  keepAliveNow(c); // a tunnel handed to the native relay
  assert.deepEqual(
    set.map((x) => [x.socket, x.ms]),
    [[c, 9000]],
    'keepAliveNow sets it at once',
  );
  keepAliveNow(c);
  keepAliveNow(d); // never added: not this module's
  assert.equal(set.length, 1, 'once, and only on a socket that waits for it');

  await pollUntil(() => (late.size === 0 ? true : undefined), { timeoutMs: 10_000, what: 'every socket settled' });
  assert.deepEqual(
    set.map((x) => [x.socket, x.ms]),
    [
      [c, 9000],
      [a, 5000],
    ],
    'the open socket got its keepalive; the closed and the forgotten ones none; c not twice',
  );
  const after = set[1].at - added;
  // the timer starts with the first add: the first tick makes it old, the second sets it
  assert.ok(after >= periodMs, `set ${after.toFixed(1)} ms after the add, not before one period (${periodMs} ms)`);

  // a socket added later, and close(): it gets none
  late.add(d, 3000);
  late.close();
  assert.equal(late.size, 0);
  await sleep(periodMs * 3);
  assert.equal(set.length, 2, 'close() drops the sockets still waiting');
  keepAliveNow(d);
  assert.equal(set.length, 2, 'and they are no longer this one’s to set');
});

test('late keepalive: the relay lets go of an upstream that closed, without waiting for a tick', async (t) => {
  const { sockets } = await connected(t, 2);
  const [client, upstream] = sockets;
  const set: Socket[] = [];
  const late = new LateKeepAlive((socket) => set.push(socket), 60_000); // no tick in this test
  t.after(() => late.close());
  late.add(upstream, 5000);
  const ended = new Promise<RelayEnd>((resolve) => relay(client, upstream, { bytesUp: 0, bytesDown: 0 }, resolve));
  assert.equal(late.size, 1);
  client.destroy();
  upstream.destroy();
  await ended;
  assert.equal(late.size, 0, 'the closed upstream is no longer held');
  keepAliveNow(upstream);
  assert.equal(set.length, 0, 'and it never gets a keepalive');
});

/** The keepalive timer (s left) of the connection localPort -> port, which must be there. */
function keepaliveTimer(localPort: number, port: number): number | undefined {
  const k = keepaliveOf('src', `127.0.0.1:${localPort}`, 'dst', `127.0.0.1:${port}`);
  assert.equal(k.connections, 1, `ss sees the connection ${localPort} -> ${port}`);
  return k.left;
}

test('dialer: a new pinned upstream has no keepalive yet, and dial.keepAlive’s a second or two later', needsAddon, async (t) => {
  const lo: Egress = { ifname: 'lo', source: '127.0.0.1', family: 4, placedBy: 'route' };
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 30_000 }, addon());
  t.after(() => dialer.close?.());
  const { port } = await tcpServer(t, () => {});
  const target: Target = { ip: '127.0.0.1', family: 4, port };
  const up = await dialer.dial(target, lo);
  t.after(() => up.destroy());
  assert.equal(keepaliveTimer(up.localPort!, port), undefined, 'no keepalive at the connect');
  const started = Date.now();
  const left = await pollUntil(() => keepaliveTimer(up.localPort!, port), { timeoutMs: 10_000, what: 'a keepalive timer' });
  const waited = Date.now() - started;
  assert.ok(left > 20 && left <= 30, `the first probe in ${left} s (dial.keepAlive 30 s)`);
  assert.ok(waited < 5000, `set ${waited} ms after the connect`);

  // keepAliveNow, as the relay calls it before an offload: at once
  const next = await dialer.dial(target, lo);
  t.after(() => next.destroy());
  assert.equal(keepaliveTimer(next.localPort!, port), undefined);
  keepAliveNow(next);
  const now = keepaliveTimer(next.localPort!, port);
  assert.ok(now !== undefined && now > 20 && now <= 30, `keepAliveNow: the first probe in ${now} s`);
});
