// openTunnel (src/inbound/tunnel.ts) contains a throw in its own steps: a bug or a value Node
// refuses, after the dial won or after it failed, ends that flow as 'failed' with one error line,
// closes the client's connection (and the upstream the dial made), and leaves the process
// running: no unhandled rejection, no other flow touched. Real loopback sockets, a connector that
// hands back a socket this test connected.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Destination, Egress, Lease } from '../../src/contracts.js';
import { systemClock } from '../../src/egress/policy.js';
import { FlowTable } from '../../src/flows.js';
import { newInboundCounters, type InboundContext } from '../../src/inbound/context.js';
import { openTunnel, type TunnelProtocol } from '../../src/inbound/tunnel.js';
import { logSink } from '../helpers/fakes.js';

const egress: Egress = { ifname: 'lo', source: '127.0.0.1', family: 4, placedBy: 'route' };
const dst: Destination = { host: '127.0.0.1', port: 9, isName: false };

async function listening(t: TestContext, onConn: (s: Socket) => void): Promise<number> {
  const server: Server = createServer({ allowHalfOpen: true }, onConn);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return (server.address() as { port: number }).port;
}

/** A client connection as an inbound sees it (the accepted side, paused), and the app's end. */
async function clientPair(t: TestContext): Promise<{ accepted: Socket; app: Socket }> {
  let take!: (s: Socket) => void;
  const accepting = new Promise<Socket>((resolve) => (take = resolve));
  const port = await listening(t, (s) => {
    s.pause();
    take(s);
  });
  const app = connect({ port, host: '127.0.0.1' });
  app.on('error', () => {});
  t.after(() => app.destroy());
  const accepted = await accepting;
  t.after(() => accepted.destroy());
  return { accepted, app };
}

function setup(t: TestContext, open: () => Promise<unknown>) {
  const sink = logSink('warn');
  const table = new FlowTable({ graceMs: 1000, log: sink.log, clock: systemClock });
  t.after(() => table.close());
  const rejections: unknown[] = [];
  const onRejection = (r: unknown) => rejections.push(r);
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  let released = 0;
  const ctx = {
    log: sink.log,
    counters: newInboundCounters(),
    flows: table,
    idleTimeoutMs: 0,
    connector: { open },
    lease: (): Lease => ({ release: () => released++ }),
  } as unknown as InboundContext;
  return { ctx, table, sink, rejections, released: () => released };
}

test('a throw after the dial won: the flow ends failed, both sockets close, one error line, the process goes on', async (t) => {
  const upstreamPort = await listening(t, (s) => s.on('error', () => {}));
  const upstream = connect({ port: upstreamPort, host: '127.0.0.1', allowHalfOpen: true });
  upstream.on('error', () => {});
  t.after(() => upstream.destroy());
  await once(upstream, 'connect');
  let released = 0;
  const { ctx, table, sink, rejections } = setup(t, async () => ({
    socket: upstream,
    egress,
    target: { ip: '127.0.0.1', family: 4, port: upstreamPort },
    localAddress: '127.0.0.1',
    localPort: upstream.localPort,
    attempts: '',
    lease: { release: () => released++ },
  }));
  const { accepted, app } = await clientPair(t);
  const proto: TunnelProtocol = {
    success: () => {
      throw new TypeError('a bug in the reply');
    },
    failure: () => 'no',
  };
  const closed = new Promise<string | null>((resolve) => table.onChange((e) => e.type === 'close' && resolve(e.flow.closeReason)));
  openTunnel(ctx, 'http-connect', accepted, 'test', dst, Buffer.alloc(0), proto);
  assert.equal(await closed, 'failed');
  assert.equal(accepted.destroyed, true, 'the client connection is closed');
  assert.equal(upstream.destroyed, true, 'the upstream the dial made is closed');
  if (!app.closed) await once(app, 'close', { signal: AbortSignal.timeout(5000) });
  assert.equal(released, 1, 'the lease is given back once');
  assert.equal(table.size, 0);
  const errors = sink.withMsg('unexpected error; this connection is closed');
  assert.equal(errors.length, 1);
  assert.match(String((errors[0].err as { message?: string }).message), /a bug in the reply/);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(rejections, [], 'no unhandled rejection');
});

test('a throw after the dial failed: the flow ends failed, the client closes, the process goes on', async (t) => {
  const { ctx, table, sink, rejections } = setup(t, () => Promise.reject(new Error('no route')));
  const { accepted, app } = await clientPair(t);
  const proto: TunnelProtocol = {
    success: () => 'yes',
    failure: () => {
      throw new TypeError('a bug in the error reply');
    },
  };
  const reasons: (string | null)[] = [];
  const closed = new Promise<void>((resolve) =>
    table.onChange((e) => {
      if (e.type !== 'close') return;
      reasons.push(e.flow.closeReason);
      resolve();
    }),
  );
  openTunnel(ctx, 'socks5-connect', accepted, 'test', dst, Buffer.alloc(0), proto);
  await closed;
  if (!app.closed) await once(app, 'close', { signal: AbortSignal.timeout(5000) });
  assert.equal(accepted.destroyed, true);
  // the dial's failure ended the flow first ('dial failed'); the throw after it changes nothing
  assert.deepEqual(reasons, ['dial failed']);
  assert.equal(table.size, 0);
  assert.equal(sink.withMsg('unexpected error; this connection is closed').length, 1);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(rejections, []);
});
