// The dialer's spare sockets (egress/dial.ts Spares), with plain unconnected sockets standing in
// for pinned ones: one per egress, made a little after it is asked for, handed over once; one of
// another epoch or kind is closed instead of used; none while the epoch is unknown; one
// asked for is made at the next turn of the loop once a flow through its egress waits for its
// server or ended (hurry), unless another dial is on its way; a
// sweep closes one that no dial took; close() closes all. The dialer's use of them, with the
// addon's real pinned sockets, is in test/integration/dial-spares.test.ts.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Socket } from 'node:net';
import type { Egress } from '../../src/contracts.js';
import { Spares, type SocketKind } from '../../src/egress/dial.js';

const eth4: Egress = { ifname: 'eth0', source: '10.0.0.2', family: 4, placedBy: 'route' };
const eth6: Egress = { ifname: 'eth0', source: 'fd00::2', family: 6, placedBy: 'route' };
const wlan: Egress = { ifname: 'wlan0', source: '192.168.1.5', family: 4, placedBy: 'route' };

function setup(o: { epoch?: () => number | undefined; fail?: boolean; onMake?: (made: number) => void } = {}) {
  const made: { egress: Egress; kind: number; socket: Socket }[] = [];
  let kind: 0 | 2 = 0;
  let epoch: number | undefined = 1;
  const spares = new Spares(
    o.epoch ?? (() => epoch),
    (egress, k) => {
      if (o.fail) throw Object.assign(new Error('socket: EMFILE'), { code: 'EMFILE' });
      const socket = new Socket();
      made.push({ egress, kind: k, socket });
      o.onMake?.(made.length);
      return socket;
    },
    () => kind,
  );
  return {
    spares,
    made,
    setKind: (k: 0 | 2) => (kind = k),
    setEpoch: (e: number | undefined) => (epoch = e),
  };
}

/**
 * A burst through eth4, under mocked timers: a spare is made, one dial takes it, `misses` dials
 * find none, and the first of them connects (its refill's delay passes).
 */
function burst(s: ReturnType<typeof setup>, t: TestContext, misses: number): void {
  s.spares.refill(eth4);
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.ok(s.spares.take(eth4, 0));
  for (let i = 0; i < misses; i++) assert.equal(s.spares.take(eth4, 0), undefined);
  s.spares.refill(eth4);
  t.mock.timers.tick(Spares.fillDelayMs);
}

/** Past the fill timer (Spares.fillDelayMs): timers fire in the order they are due. */
const pastFill = () => sleep(Spares.fillDelayMs + 20);

test('spares: one per egress, made a little after it is asked for, handed over once', async (t) => {
  const { spares, made } = setup();
  t.after(() => spares.close());
  spares.refill(eth4);
  spares.refill(eth4); // asked twice before the timer: one spare
  spares.refill(eth6);
  assert.equal(made.length, 0, 'nothing is made in the caller (the flow that connected) itself');
  await pastFill();
  assert.equal(made.length, 2);
  assert.deepEqual(made.map((m) => [m.egress.source, m.kind]), [['10.0.0.2', 0], ['fd00::2', 0]]);
  assert.equal(spares.size, 2);
  spares.refill(eth4); // it has one
  await pastFill();
  assert.equal(made.length, 2);
  assert.equal(spares.take(wlan, 0), undefined, 'another interface has none');
  assert.equal(spares.take(eth4, 0), made[0].socket);
  assert.equal(spares.take(eth4, 0), undefined, 'handed over once');
  assert.equal(spares.take(eth6, 0), made[1].socket, 'the same interface, the other family: its own');
  assert.equal(spares.size, 0);
  assert.equal(made[0].socket.destroyed, false, 'a spare handed over is the dial’s, open');
});

test('spares: one made in another epoch, or for another kind, is closed, not used', async (t) => {
  const s = setup();
  t.after(() => s.spares.close());
  // (keepalive is no part of a spare: the dialer sets it after the connect, test/unit/keepalive)
  const cases: [string, () => void, SocketKind][] = [
    ['epoch moved (a link, address or route event)', () => s.setEpoch(2), 0],
    ['MPTCP asked for now', () => {}, 2],
  ];
  for (const [why, change, kind] of cases) {
    s.spares.refill(eth4);
    await pastFill();
    const spare = s.made.at(-1)!.socket;
    change();
    assert.equal(s.spares.take(eth4, kind), undefined, why);
    assert.equal(spare.destroyed, true, `${why}: the stale spare is closed`);
    assert.equal(s.spares.size, 0);
  }
  // the next one is made in the new epoch, and used
  s.spares.refill(eth4);
  await pastFill();
  assert.equal(s.spares.take(eth4, 0), s.made.at(-1)!.socket);
});

test('spares: none while nothing watches the network (no epoch); a failed socket() leaves none', async (t) => {
  const s = setup();
  t.after(() => s.spares.close());
  s.setEpoch(undefined);
  s.spares.refill(eth4);
  await pastFill();
  assert.equal(s.made.length, 0);
  const failing = setup({ fail: true });
  t.after(() => failing.spares.close());
  failing.spares.refill(eth4); // the timer must not throw: the next dial meets the error itself
  await pastFill();
  assert.equal(failing.spares.size, 0);
  assert.equal(failing.spares.take(eth4, 0), undefined);
});

test('spares: a sweep closes a spare that no dial took since the last one; close() closes all', async () => {
  const s = setup();
  s.spares.refill(eth4);
  s.spares.refill(wlan);
  await pastFill();
  assert.equal(s.spares.size, 2);
  s.spares.sweep(); // seen once: kept
  assert.equal(s.spares.size, 2);
  assert.equal(s.spares.take(eth4, 0), s.made[0].socket);
  s.spares.refill(eth4);
  await pastFill();
  s.spares.sweep(); // wlan0's was here at the last sweep too, untaken: closed; eth0's is new
  assert.equal(s.made[1].socket.destroyed, true);
  assert.equal(s.spares.size, 1);
  s.setEpoch(7);
  s.spares.sweep(); // another epoch: closed at the sweep, without waiting for a take
  assert.equal(s.made[2].socket.destroyed, true);
  assert.equal(s.spares.size, 0);
  s.setEpoch(8);
  s.spares.refill(eth4);
  await pastFill();
  const last = s.made.at(-1)!.socket;
  s.spares.refill(wlan); // asked for, not made yet: close() drops the ask
  s.spares.close();
  assert.equal(last.destroyed, true);
  assert.equal(s.spares.size, 0);
  await pastFill();
  s.spares.refill(eth4);
  await pastFill();
  assert.equal(s.spares.size, 0, 'none after close()');
  assert.equal(s.made.at(-1)!.socket, last);
});

test('spares: hurry (a flow through the egress ended) makes a spare asked for at the next turn of the loop, not after the delay', (t) => {
  // mocked timers: the immediate runs at tick(0); the delayed fill needs tick(fillDelayMs)
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'setImmediate'] });
  const s = setup();
  t.after(() => s.spares.close());
  s.spares.hurry('eth0', '10.0.0.2'); // nothing asked for there (say a UDP flow ended): nothing
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.made.length, 0, 'hurry asks for nothing itself');
  s.spares.refill(eth4); // a dial through eth0 connected: a spare in fillDelayMs
  t.mock.timers.tick(0);
  assert.equal(s.made.length, 0, 'refill waits for its delay');
  s.spares.hurry('wlan0', '192.168.1.5'); // another egress's flow ended: eth0's still waits
  t.mock.timers.tick(0);
  assert.equal(s.made.length, 0);
  s.spares.hurry('eth0', '10.0.0.2'); // that flow ended before the delay
  s.spares.hurry('eth0', '10.0.0.2'); // twice: one spare
  assert.equal(s.made.length, 0, 'nothing is made in the caller itself');
  t.mock.timers.tick(0);
  assert.equal(s.made.length, 1, 'made at the next turn');
  assert.equal(s.made[0].egress, eth4);
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.made.length, 1, 'the delayed fill finds it made');
  s.spares.hurry('eth0', '10.0.0.2'); // it has one
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.made.length, 1);
  assert.equal(s.spares.take(eth4, 0), s.made[0].socket);
  s.spares.refill(eth4);
  s.spares.close();
  s.spares.hurry('eth0', '10.0.0.2'); // none after close()
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.made.length, 1);
});

test('spares: hurry waits while another dial is on its way (a burst), and works again once every dial settled', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'setImmediate'] });
  const s = setup();
  t.after(() => s.spares.close());
  s.spares.refill(eth4); // a dial through eth0 connected: a spare asked for
  s.spares.dialStarted(); // two more dials on their way
  s.spares.dialStarted();
  s.spares.hurry('eth0', '10.0.0.2'); // a flow waits for its server: not now
  t.mock.timers.tick(0);
  assert.equal(s.made.length, 0, 'no spare while dials are on their way');
  s.spares.dialSettled();
  s.spares.hurry('eth0', '10.0.0.2');
  t.mock.timers.tick(0);
  assert.equal(s.made.length, 0, 'nor while one still is');
  s.spares.dialSettled();
  s.spares.hurry('eth0', '10.0.0.2');
  t.mock.timers.tick(0);
  assert.equal(s.made.length, 1, 'once every dial settled, at the next turn');
});

test('spares: dials that found none keep one more each for the next burst, made once dials pause, a batch a turn, up to maxDepth', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'setImmediate'] });
  let onMake: ((n: number) => void) | undefined;
  const s = setup({ onMake: (n) => onMake?.(n) });
  t.after(() => s.spares.close());
  assert.equal(s.spares.take(eth4, 0), undefined, 'none made for it yet');
  s.spares.refill(eth4);
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.made.length, 1, 'one spare, as before any burst (a first dial is no burst)');
  t.mock.timers.tick(Spares.quietMs * 3);
  assert.equal(s.made.length, 1);

  // a burst: one dial takes the spare, three find none
  assert.equal(s.spares.take(eth4, 0), s.made[0].socket);
  for (let i = 0; i < 3; i++) assert.equal(s.spares.take(eth4, 0), undefined);
  assert.equal(s.spares.take(wlan, 0), undefined, 'another egress, never filled: no spares asked for there');
  s.spares.refill(eth4); // the first of them connected
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.made.length, 2, 'the first spare comes back as before');
  t.mock.timers.tick(Spares.quietMs - 1);
  assert.equal(s.made.length, 2, 'the others wait for the dials to pause');
  t.mock.timers.tick(1);
  assert.equal(s.spares.size, 4, 'one for each dial of the burst');
  assert.deepEqual(new Set(s.made.map((m) => m.egress)), new Set([eth4]), 'for the egress that had the burst only');

  // a burst bigger than maxDepth: the spares stop at maxDepth, made `batch` at a turn of the loop
  for (let i = 0; i < 4; i++) assert.ok(s.spares.take(eth4, 0));
  for (let i = 0; i < Spares.maxDepth + 10; i++) assert.equal(s.spares.take(eth4, 0), undefined);
  s.spares.refill(eth4);
  t.mock.timers.tick(Spares.fillDelayMs);
  assert.equal(s.spares.size, 1);
  // a dial comes while the first batch is made: the next batch waits for another pause
  const firstBatchEnds = s.made.length + Spares.batch;
  let tookBetween: Socket | undefined;
  onMake = (n) => {
    if (n === firstBatchEnds) tookBetween = s.spares.take(eth4, 0);
  };
  t.mock.timers.tick(Spares.quietMs);
  onMake = undefined;
  assert.ok(tookBetween, 'the dial between two batches took a spare');
  assert.equal(s.spares.size, 1 + Spares.batch - 1, 'one batch, less the spare that dial took');
  t.mock.timers.tick(Spares.quietMs);
  assert.equal(s.spares.size, Spares.maxDepth, 'the rest once dials paused; never more than maxDepth');
  t.mock.timers.tick(Spares.quietMs * 3);
  assert.equal(s.spares.size, Spares.maxDepth);

  // no dial takes them: a whole sweep period without one closes them, and the depth goes down
  // the last maxDepth + 1 made, but the one the dial between two batches took
  const pool = s.made
    .slice(-(Spares.maxDepth + 1))
    .map((m) => m.socket)
    .filter((sock) => sock !== tookBetween);
  assert.equal(pool.length, Spares.maxDepth);
  s.spares.sweep();
  s.spares.sweep();
  assert.equal(s.spares.size, 0);
  assert.ok(pool.every((sock) => sock.destroyed), 'every unused spare closed');
  const before = s.made.length;
  s.spares.refill(eth4);
  t.mock.timers.tick(Spares.fillDelayMs);
  for (let i = 0; i < 3; i++) t.mock.timers.tick(Spares.quietMs);
  assert.equal(s.made.length - before, 1, 'back to one spare');
});

test('spares: close() stops a pending fill of a burst’s spares', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'setImmediate'] });
  const s = setup();
  burst(s, t, 5);
  assert.equal(s.made.length, 2);
  s.spares.close();
  assert.equal(s.made[1].socket.destroyed, true);
  t.mock.timers.tick(Spares.quietMs * 5);
  assert.equal(s.made.length, 2, 'nothing made after close()');
  assert.equal(s.spares.size, 0);
});

test('spares: a burst’s spares made before a network event are all closed at the first dial after it', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'setImmediate'] });
  const s = setup();
  t.after(() => s.spares.close());
  s.spares.refill(wlan);
  burst(s, t, 3);
  t.mock.timers.tick(Spares.quietMs);
  assert.equal(s.spares.size, 5, 'four for eth0, one for wlan0');
  // wlan0's (made first) and eth0's last four; eth0's first went to a dial
  const before = [s.made[0], ...s.made.slice(-4)].map((m) => m.socket);
  s.setEpoch(2);
  assert.equal(s.spares.take(eth4, 0), undefined);
  assert.equal(s.spares.size, 0, 'none of that epoch is kept, on any interface');
  assert.ok(before.every((sock) => sock.destroyed));
});
