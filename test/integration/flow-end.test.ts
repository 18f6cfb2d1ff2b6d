// Issue 12: every flow ends once, by its true reason, and gives back its placement (the affinity
// lease) whatever ended it. A real holdfast on loopback, each end path in turn: the 'flow close'
// line says the reason (a code only for failures), and the policy's live count is back to zero.
// Timers that holdfast runs on its clock (affinity linger, UDP idle, BIND accept) run on a fake
// clock here, so the linger and the timeouts are exact.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { startHoldfast } from '../../src/app.js';
import { parseConfig } from '../../src/config.js';
import { EgressLostError } from '../../src/errors.js';
import { FakeClock } from '../helpers/fakes.js';
import { LogSink, type LogLine } from '../helpers/proxy.js';
import { closedPort, echoServer, httpServer, tcpServer } from '../helpers/servers.js';
import { readAll, readN, readReply, requestBytes, socksRequest } from '../helpers/socks-client.js';
import { frame, socksAssociate, udpEcho, udpSocket } from '../helpers/udp-echo.js';

const LINGER_MS = 1000;

async function start(t: TestContext, overrides: Record<string, unknown> = {}) {
  const clock = new FakeClock(Date.now());
  const cfg = parseConfig(
    { listen: ['127.0.0.1:0'], log: { level: 'debug' }, affinity: { mode: 'host', linger: LINGER_MS }, ...overrides },
    'test',
  );
  const logs = new LogSink();
  const hf = await startHoldfast(cfg, { log: pino({ level: 'debug' }, logs), clock });
  t.after(() => hf.close());
  return { hf, logs, clock, port: hf.listeners[0].bound().port };
}
type P = Awaited<ReturnType<typeof start>>;

/** The n-th 'flow close' line (1-based), and the affinity table right after it. */
async function closeLine(p: P, n = 1): Promise<LogLine> {
  await p.logs.waitFor(() => p.logs.byMsg('flow close').length >= n, 10_000);
  return p.logs.byMsg('flow close')[n - 1];
}

async function ended(p: P, reason: string, code?: string, n = 1): Promise<LogLine> {
  const line = await closeLine(p, n);
  assert.equal(line.reason, reason, `reason: ${JSON.stringify(line)}`);
  assert.equal(line.code, code, `code: ${JSON.stringify(line)}`);
  assert.equal(p.hf.affinity().live, 0, 'the flow gave its placement back');
  return line;
}

/** Wait until the upstream server has a connection (so the flow is pinned and holds its lease). */
function holdingServer(t: TestContext) {
  const conns: Socket[] = [];
  const waiters: (() => void)[] = [];
  const srv = tcpServer(t, (s) => {
    s.on('error', () => {});
    conns.push(s);
    for (const w of waiters.splice(0)) w();
  });
  const connected = () =>
    new Promise<Socket>((r) => {
      if (conns.length) r(conns[conns.length - 1]);
      else waiters.push(() => r(conns[conns.length - 1]));
    });
  return { srv, connected };
}

test('12: SOCKS CONNECT that finishes: done, no code, lease given back; the linger then ends', async (t) => {
  const p = await start(t);
  const echo = await echoServer(t);
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  assert.equal(p.hf.affinity().live, 1, 'a live flow holds its destination');
  socket.end('x');
  await readAll(socket);
  await ended(p, 'done');
  assert.equal(p.hf.affinity().entries, 1, 'lingering');
  p.clock.advance(LINGER_MS + 1);
  assert.deepEqual(p.hf.affinity(), { entries: 0, live: 0 });
});

test('12: SOCKS CONNECT whose client resets mid-stream: client left, no code', async (t) => {
  const p = await start(t);
  const h = holdingServer(t);
  const srv = await h.srv;
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  assert.equal(reply.rep, 0);
  await h.connected();
  socket.resetAndDestroy();
  await ended(p, 'client left');
});

test('12: SOCKS CONNECT whose upstream resets: upstream left, no code', async (t) => {
  const p = await start(t);
  const h = holdingServer(t);
  const srv = await h.srv;
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  assert.equal(reply.rep, 0);
  (await h.connected()).resetAndDestroy();
  await ended(p, 'upstream left');
});

test('12: a tunnel idle past limits.idleTimeout: reason idle, no code, counted', async (t) => {
  const p = await start(t, { limits: { idleTimeout: 300 } });
  const h = holdingServer(t);
  const srv = await h.srv;
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  assert.equal(reply.rep, 0);
  await ended(p, 'idle');
  assert.equal(p.hf.counters.idleTimeouts, 1);
});

test('12: a dial that fails: dial failed with its code, nothing held', async (t) => {
  const p = await start(t);
  const port = await closedPort();
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', port);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x05);
  await ended(p, 'dial failed', 'HF_REFUSED');
  assert.equal(p.hf.affinity().entries, 0);
});

test('12: a cut tunnel: cut with HF_EGRESS_LOST, lease given back', async (t) => {
  const p = await start(t);
  const h = holdingServer(t);
  const srv = await h.srv;
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  assert.equal(reply.rep, 0);
  await h.connected();
  assert.equal(p.hf.flows.list()[0].cut(new EgressLostError('lo: test')), true);
  await ended(p, 'cut', 'HF_EGRESS_LOST');
});

test('12: shutdown ends live flows as shutdown, no code, leases given back', async (t) => {
  const p = await start(t);
  const h = holdingServer(t);
  const srv = await h.srv;
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  assert.equal(reply.rep, 0);
  await h.connected();
  await p.hf.close();
  await ended(p, 'shutdown');
});

test('12: the flow limit refuses without taking anything; the live flow still holds its lease', async (t) => {
  const p = await start(t, { limits: { maxFlows: 1 } });
  const h = holdingServer(t);
  const srv = await h.srv;
  const a = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  t.after(() => a.socket.destroy());
  assert.equal(a.reply.rep, 0);
  const b = await socksRequest(p.port, 0x01, '127.0.0.1', srv.port);
  t.after(() => b.socket.destroy());
  assert.equal(b.reply.rep, 0x01, 'refused by the limit');
  assert.deepEqual(p.hf.affinity(), { entries: 1, live: 1 });
  a.socket.end();
  (await h.connected()).end();
  await ended(p, 'done');
});

/** A plain-HTTP request through the forwarder on a raw socket (so the test can abandon it). */
async function forwardRaw(p: P, port: number, path = '/'): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port: p.port });
  s.on('error', () => {});
  await once(s, 'connect');
  s.write(`GET http://127.0.0.1:${port}${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  return s;
}

test('12: a forwarded response delivered whole: done, lease given back', async (t) => {
  const p = await start(t);
  const srv = await httpServer(t, (_req, res) => res.end('hello'));
  const body = await new Promise<string>((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: p.port, path: `http://127.0.0.1:${srv.port}/`, headers: { host: `127.0.0.1:${srv.port}` }, agent: false },
      (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString()));
        res.on('end', () => resolve(b));
      },
    );
    req.on('error', reject);
    req.end();
  });
  assert.equal(body, 'hello');
  await ended(p, 'done');
});

test('12: a forwarded download the client abandons mid-response gives its destination back after the linger', async (t) => {
  const p = await start(t);
  const srv = await httpServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': String(10_000_000) });
    res.write(Buffer.alloc(64 * 1024));
    // and nothing more: the client gives up
  });
  const client = await forwardRaw(p, srv.port);
  await readN(client, 1024);
  assert.equal(p.hf.affinity().live, 1);
  client.destroy();
  await ended(p, 'client left');
  assert.deepEqual(p.hf.affinity(), { entries: 1, live: 0 }, 'lingering');
  p.clock.advance(LINGER_MS + 1);
  assert.deepEqual(p.hf.affinity(), { entries: 0, live: 0 }, 'the destination is released after the linger');
});

test('forward: a client that leaves mid-response stops the upstream request (the origin sees its connection close)', async (t) => {
  const p = await start(t);
  let upstreamClosed!: Promise<unknown>;
  const srv = await httpServer(t, (req, res) => {
    upstreamClosed = once(req.socket, 'close');
    res.writeHead(200, { 'content-length': String(10_000_000) });
    res.write(Buffer.alloc(64 * 1024));
    // and nothing more, until the request is aborted
  });
  const client = await forwardRaw(p, srv.port);
  await readN(client, 1024);
  client.destroy();
  await ended(p, 'client left');
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('the upstream connection stayed open after the client left')), 5000);
  });
  try {
    await Promise.race([upstreamClosed, deadline]);
  } finally {
    clearTimeout(timer);
  }
});

test('12: a forwarded response the upstream breaks mid-way: upstream error (a failure, with a code)', async (t) => {
  const p = await start(t);
  const srv = await httpServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '100000' });
    res.write(Buffer.alloc(1000), () => res.socket?.destroy());
  });
  const client = await forwardRaw(p, srv.port);
  t.after(() => client.destroy());
  const line = await closeLine(p);
  assert.equal(line.reason, 'upstream error', JSON.stringify(line));
  assert.match(String(line.code), /^HF_/);
  assert.equal(p.hf.affinity().live, 0);
});

test('12: a UDP association: its end (the control connection closes) and idle both give the placement back', async (t) => {
  const p = await start(t, { udp: { idleTimeout: 5000 } });
  const echo = await udpEcho(t);
  const { socket: udp, inbox } = await udpSocket(t);
  for (const how of ['done', 'idle'] as const) {
    const n = how === 'done' ? 1 : 2;
    const a = await socksAssociate({ host: '127.0.0.1', port: p.port });
    t.after(() => a.socket.destroy());
    udp.send(frame('127.0.0.1', echo.port, 'ping'), a.relay.port, a.relay.host);
    await inbox.next(5000);
    assert.equal(p.hf.affinity().live, 1, `${how}: the association holds its destination`);
    if (how === 'done') a.socket.end();
    else p.clock.advance(5000);
    await ended(p, how, undefined, n);
  }
});

test('12: a BIND whose peer never comes: timeout with HF_DIAL_TIMEOUT, placement given back', async (t) => {
  const p = await start(t, { bind: { acceptTimeout: 2000 } });
  const s = connect({ host: '127.0.0.1', port: p.port });
  t.after(() => s.destroy());
  s.on('error', () => {});
  await once(s, 'connect');
  s.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), requestBytes(0x02, '127.0.0.1', 9)]));
  await readN(s, 2);
  const first = await readReply(s);
  assert.equal(first.rep, 0);
  assert.equal(p.hf.affinity().live, 1);
  p.clock.advance(2000);
  await ended(p, 'timeout', 'HF_DIAL_TIMEOUT');
});
