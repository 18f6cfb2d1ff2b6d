// The relay's onFirstUp (src/relay.ts): called once, just after the client's first bytes were
// written upstream, with the tunnel's counters; never for what the server sends, nor for the
// client's later bytes. The tunnel uses it to tell the dialer the flow now waits for its server.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { relay, type RelayCounters, type RelayEnd } from '../../src/relay.js';
import { readN } from '../helpers/socks-client.js';

/** A connected loopback pair, both ends half-open capable: [the end we hold, the far end]. */
async function pair(t: TestContext): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const near = connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, allowHalfOpen: true });
  await once(near, 'connect');
  const [far] = await accepted;
  t.after(() => {
    near.destroy();
    far.destroy();
  });
  return [near, far];
}

test('relay: onFirstUp comes once, after the client’s first bytes were written upstream', async (t) => {
  // the application's socket and the proxy's client side; the proxy's upstream and the server
  const [app, client] = await pair(t);
  const [upstream, server] = await pair(t);
  const counters: RelayCounters & { name: string } = { bytesUp: 0, bytesDown: 0, name: 'this flow' };
  const calls: { name: string; bytesUp: number; written: number }[] = [];
  const ended = new Promise<RelayEnd>((resolve) =>
    relay(client, upstream, counters, resolve, {
      // typed by the counters given: the tunnel passes its flow and gets it back
      onFirstUp: (c) => calls.push({ name: c.name, bytesUp: c.bytesUp, written: upstream.bytesWritten }),
    }),
  );

  // the server speaks first: no call
  server.write('hello');
  assert.equal((await readN(app, 5)).toString(), 'hello');
  assert.equal(calls.length, 0, 'bytes from the server are no first bytes upstream');

  app.write('abc');
  assert.equal((await readN(server, 3)).toString(), 'abc');
  assert.deepEqual(calls, [{ name: 'this flow', bytesUp: 3, written: 3 }], 'once, after the write, with the counters');

  app.write('defg');
  assert.equal((await readN(server, 4)).toString(), 'defg');
  app.end();
  server.end();
  assert.equal((await ended).reason, 'done');
  assert.equal(calls.length, 1, 'the later bytes call nothing');
  assert.equal(counters.bytesUp, 7);
});
