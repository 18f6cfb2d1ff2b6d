// own-ends (src/egress/own-ends.ts): holdfast's own upstream sockets, recorded by the dialer until
// they close, so a client arriving from one of them is known for a loop. The sockets here are
// stand-ins (an EventEmitter with the two ends a net.Socket reports): what is tested is the
// bookkeeping, many sockets per port closing in any order; security.test.ts tests it with real
// sockets through the real dialer and listener.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { trackOwnEnds } from '../../src/egress/own-ends.js';

function fakeSocket(localPort: number): Socket {
  return Object.assign(new EventEmitter(), { localAddress: '127.0.0.1', localPort }) as unknown as Socket;
}

/** The connection a client makes from `s`'s local end to `port` on 127.0.0.1. */
const from = (s: Socket, port: number) => ({ remoteAddress: '127.0.0.1', remotePort: s.localPort, localAddress: '127.0.0.1', localPort: port });

test('own ends: each live socket is found by its pair of ends, a closed one never, in any close order', () => {
  const own = trackOwnEnds();
  const toA = Array.from({ length: 40 }, (_v, i) => fakeSocket(40000 + i));
  const toB = Array.from({ length: 5 }, (_v, i) => fakeSocket(50000 + i));
  for (const s of toA) own.record(s, { ip: '127.0.0.1', family: 4, port: 1080 });
  for (const s of toB) own.record(s, { ip: '127.0.0.1', family: 4, port: 8080 });
  assert.equal(own.size, 45);
  // close a scattered half of the first port's sockets (the last one among them)
  const closed = new Set<Socket>();
  for (const i of [0, 39, 7, 8, 20, 1, 38, 13, 30, 2, 25, 11, 19, 33, 5, 16, 27, 36, 22, 3]) {
    toA[i].emit('close');
    closed.add(toA[i]);
  }
  toA[0].emit('close'); // a second 'close' changes nothing
  assert.equal(own.size, 25);
  for (const s of toA) assert.equal(own.has(from(s, 1080)), !closed.has(s), `local port ${s.localPort}`);
  // the pair counts, not the port alone: a live socket's local port, to another port, is not ours
  assert.equal(own.has(from(toA[4], 8080)), false);
  assert.equal(own.has(from(toB[0], 8080)), true);
  assert.equal(own.has({ ...from(toB[0], 8080), remoteAddress: '127.0.0.2' }), false);
  for (const s of [...toA, ...toB]) s.emit('close');
  assert.equal(own.size, 0);
  assert.equal(own.has(from(toB[0], 8080)), false);
});

test('own ends: many ports that come and go leave nothing behind that answers', () => {
  const own = trackOwnEnds();
  for (let port = 1; port <= 2000; port++) {
    const s = fakeSocket(30000);
    own.record(s, { ip: '127.0.0.1', family: 4, port });
    assert.equal(own.has(from(s, port)), true);
    s.emit('close');
    assert.equal(own.has(from(s, port)), false);
  }
  const s = fakeSocket(30001);
  own.record(s, { ip: '127.0.0.1', family: 4, port: 7 });
  assert.equal(own.size, 1);
  assert.equal(own.has(from(s, 7)), true);
});
