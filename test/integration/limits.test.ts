// Limits and timeouts (issue 7): the handshake deadline against slowloris clients (both
// protocols, measured), oversized request heads (431), the flow caps overall and per client
// (SOCKS 0x01, HTTP 503, counted), and the idle timeout of tunnels.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { parseConfig } from '../../src/config.js';
import {
  closedAfter,
  connectName,
  connectTo,
  connectV4,
  drain,
  rawHttp,
  startHf,
  statusOf,
} from '../helpers/hardening.js';
import { run } from '../helpers/proc.js';
import { flowsDrained } from '../helpers/proxy.js';
import { echoServer, httpServer } from '../helpers/servers.js';
import { readAll, readN, socksRequest } from '../helpers/socks-client.js';

const HANDSHAKE_MS = 1000;
/** a cut counts as "at the timeout" in [timeout - 50 ms, timeout + this] */
const SLACK_MS = 400;

/** Send `bytes` one byte every `everyMs` until the proxy closes; when it closed and what came back. */
async function trickle(port: number, bytes: Buffer, everyMs: number): Promise<{ ms: number; sent: number; got: Buffer; how: string }> {
  const s = await connectTo(port);
  const t0 = Date.now();
  const out = drain(s, 10_000);
  let sent = 0;
  const timer = setInterval(() => {
    if (sent < bytes.length && !s.destroyed && s.writable) s.write(bytes.subarray(sent, ++sent));
  }, everyMs);
  const r = await out;
  clearInterval(timer);
  const ms = Date.now() - t0;
  s.destroy();
  return { ms, sent, got: r.bytes, how: r.how };
}

function assertAtTimeout(ms: number, what: string): void {
  process.stdout.write(`${what}: cut after ${ms} ms (handshakeTimeout ${HANDSHAKE_MS} ms)\n`);
  assert.ok(ms >= HANDSHAKE_MS - 50 && ms <= HANDSHAKE_MS + SLACK_MS, `${what}: cut after ${ms} ms, expected ${HANDSHAKE_MS}..${HANDSHAKE_MS + SLACK_MS}`);
}

test('slowloris SOCKS5: a client trickling a valid handshake is cut at handshakeTimeout, counted', async (t) => {
  const p = await startHf(t, { limits: { handshakeTimeout: HANDSHAKE_MS } });
  // a long but valid greeting + CONNECT to a long name, 1 byte / 150 ms: ~40 s if never cut
  const bytes = Buffer.concat([Buffer.from([0x05, 0x02, 0x00, 0x01]), connectName('a'.repeat(250) + '.example', 80)]);
  const r = await trickle(p.port, bytes, 150);
  assertAtTimeout(r.ms, 'SOCKS5 trickle');
  assert.ok(r.sent < bytes.length, 'the handshake never completed');
  assert.deepEqual([...r.got], [0x05, 0x00], 'the method answer, then the close: no request reply');
  // the same during a login (auth on), and a client that never says anything
  const q = await startHf(t, { limits: { handshakeTimeout: HANDSHAKE_MS }, auth: { users: [{ username: 'u', password: 'p'.repeat(200) }] } });
  const login = Buffer.concat([Buffer.from([0x05, 0x01, 0x02, 0x01, 0x01, 0x75, 200]), Buffer.alloc(200, 0x70)]);
  const r2 = await trickle(q.port, login, 150);
  assertAtTimeout(r2.ms, 'SOCKS5 trickled login');
  assert.deepEqual([...r2.got], [0x05, 0x02]);
  const silent = await trickle(q.port, Buffer.alloc(0), 1000);
  assertAtTimeout(silent.ms, 'silent client');
  assert.equal(p.hf.counters.handshakeTimeouts, 1);
  assert.equal(q.hf.counters.handshakeTimeouts, 2);
  assert.equal(p.hf.flows.size + q.hf.flows.size, 0);
});

test('slowloris HTTP: a client trickling a request head is cut at handshakeTimeout with 408, counted', async (t) => {
  const p = await startHf(t, { limits: { handshakeTimeout: HANDSHAKE_MS } });
  const head = Buffer.from(`GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1\r\n${'X-Slow: 1\r\n'.repeat(50)}\r\n`);
  for (const every of [150, 600]) {
    const r = await trickle(p.port, head, every);
    assertAtTimeout(r.ms, `HTTP trickle every ${every} ms`);
    assert.equal(statusOf(r.got.toString('latin1')), 408, `got ${JSON.stringify(r.got.toString('latin1'))}`);
  }
  const connect = Buffer.from(`CONNECT 127.0.0.1:9 HTTP/1.1\r\n${'X-Slow: 1\r\n'.repeat(50)}\r\n`);
  const c = await trickle(p.port, connect, 150);
  assertAtTimeout(c.ms, 'CONNECT trickle');
  assert.equal(statusOf(c.got.toString('latin1')), 408);
  assert.equal(p.hf.counters.handshakeTimeouts, 3);

  // a request head that arrives in time is served, and the connection is not cut afterwards
  const echo = await echoServer(t);
  const s = await connectTo(p.port);
  s.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n`);
  await new Promise((r) => setTimeout(r, HANDSHAKE_MS / 2));
  s.write('\r\n');
  assert.match((await readN(s, 39)).toString(), /^HTTP\/1\.1 200 Connection established\r\n\r\n$/);
  await new Promise((r) => setTimeout(r, HANDSHAKE_MS + SLACK_MS));
  s.end('still here');
  assert.equal((await readAll(s)).toString(), 'still here', 'a tunnel outlives the handshake deadline');
  assert.equal(p.hf.counters.handshakeTimeouts, 3);
  await flowsDrained(p.hf);
});

test('oversized request heads get 431 (limits.maxHeaderBytes), smaller ones are served', async (t) => {
  const p = await startHf(t, { limits: { maxHeaderBytes: 2048 } });
  const srv = await httpServer(t);
  const big = `X-Big: ${'a'.repeat(3000)}\r\n`;
  const fwd = await rawHttp(p.port, `GET http://127.0.0.1:${srv.port}/ HTTP/1.1\r\nHost: x\r\n${big}\r\n`);
  assert.equal(statusOf(fwd.text), 431, fwd.text.slice(0, 80));
  assert.equal(fwd.timedOut, false, 'closed after the 431');
  // Node counts header names and values (not ': ' and CRLF): 200 x 24 counted bytes
  const many = await rawHttp(p.port, `CONNECT 127.0.0.1:${srv.port} HTTP/1.1\r\n${`X-Abc: ${'b'.repeat(19)}\r\n`.repeat(200)}\r\n`);
  assert.equal(statusOf(many.text), 431);
  // one long line: over the limit whichever reader takes the head (connect-head or Node's)
  const long = await rawHttp(p.port, `CONNECT 127.0.0.1:${srv.port} HTTP/1.1\r\nHost: x\r\n${big}\r\n`);
  assert.equal(statusOf(long.text), 431);
  const local = await rawHttp(p.port, `GET /status HTTP/1.1\r\nHost: x\r\n${big}\r\n`);
  assert.equal(statusOf(local.text), 431);
  assert.equal(srv.seen.length, 0, 'nothing forwarded');
  assert.equal(p.hf.counters.headersTooLarge, 4);

  const small = await run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', '-x', p.url, '-H', `X-Fits: ${'b'.repeat(1500)}`, `http://127.0.0.1:${srv.port}/`]);
  assert.equal(small.stdout, '200');
  assert.equal(srv.seen.length, 1);
  // a reload changes the limit for new connections
  await p.hf.reload(parseConfig({ listen: ['127.0.0.1:0'], limits: { maxHeaderBytes: 8192 } }, 'test'));
  const after = await rawHttp(p.port, `GET http://127.0.0.1:${srv.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${big}\r\n`);
  assert.equal(statusOf(after.text), 200, after.text.slice(0, 80));
  const tunnel = await rawHttp(p.port, `CONNECT 127.0.0.1:${srv.port} HTTP/1.1\r\nHost: x\r\n${big}\r\n`);
  assert.equal(statusOf(tunnel.text), 200, tunnel.text.slice(0, 80));
  await flowsDrained(p.hf);
});

test('maxFlows: flows over the cap are refused politely (SOCKS 0x01, HTTP 503) and counted; a freed slot is reused', async (t) => {
  const p = await startHf(t, { limits: { maxFlows: 2 } });
  const echo = await echoServer(t);
  const srv = await httpServer(t);
  const a = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => a.socket.destroy());
  const b = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => b.socket.destroy());
  assert.equal(a.reply.rep, 0x00);
  assert.equal(b.reply.rep, 0x00);
  assert.equal(p.hf.flows.size, 2);

  const c = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  assert.equal(c.reply.rep, 0x01, 'SOCKS: general failure');
  assert.equal((await drain(c.socket, 3000)).timedOut, false, 'then closed');
  const connect = await rawHttp(p.port, `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(statusOf(connect.text), 503, connect.text);
  assert.match(connect.text, /HF_LIMIT/);
  const fwd = await run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', '-x', p.url, `http://127.0.0.1:${srv.port}/`]);
  assert.equal(fwd.stdout, '503');
  assert.equal(srv.seen.length, 0);
  assert.equal(p.hf.counters.limitRefusals, 3);
  // holdfast's own pages are not flows: still served at the cap
  const st = await run('curl', ['-sS', '--max-time', '5', `${p.url}/status`]);
  assert.equal(JSON.parse(st.stdout).flows.length, 2);

  // the live tunnels still work, and a slot freed is usable again
  a.socket.end('a');
  assert.equal((await readAll(a.socket)).toString(), 'a');
  await pollFlows(p, 1);
  const d = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => d.socket.destroy());
  assert.equal(d.reply.rep, 0x00);
  d.socket.end('d');
  b.socket.end('b');
  assert.equal((await readAll(d.socket)).toString(), 'd');
  assert.equal((await readAll(b.socket)).toString(), 'b');
  await flowsDrained(p.hf);
});

async function pollFlows(p: { hf: { flows: { size: number } } }, n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (p.hf.flows.size !== n) {
    if (Date.now() > deadline) throw new Error(`flows ${p.hf.flows.size}, expected ${n}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('maxFlowsPerClient: a second flow from one client address is refused, another address is not', async (t) => {
  const p = await startHf(t, { limits: { maxFlowsPerClient: 1 } });
  const echo = await echoServer(t);
  const socksFrom = async (local: string) => {
    const s = await connectTo(p.port, '127.0.0.1', local);
    s.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), connectV4('127.0.0.1', echo.port)]));
    const r = await readN(s, 12);
    return { s, rep: r[3] };
  };
  const a1 = await socksFrom('127.0.0.1');
  t.after(() => a1.s.destroy());
  assert.equal(a1.rep, 0x00);
  const a2 = await socksFrom('127.0.0.1');
  assert.equal(a2.rep, 0x01, 'second flow from 127.0.0.1: general failure');
  const c2 = await rawHttp(p.port, `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
  assert.equal(statusOf(c2.text), 503, 'HTTP CONNECT from 127.0.0.1: 503');
  assert.match(c2.text, /maxFlowsPerClient/);
  const b1 = await socksFrom('127.0.0.2');
  t.after(() => b1.s.destroy());
  assert.equal(b1.rep, 0x00, 'a flow from 127.0.0.2 is its own client');
  assert.equal(p.hf.counters.limitRefusals, 2);
  const clients = (p.hf.status().flows as unknown as Array<{ client: string }>).map((f) => f.client.split(':')[0]).sort();
  assert.deepEqual(clients, ['127.0.0.1', '127.0.0.2']);
  a1.s.end('one');
  assert.equal((await readAll(a1.s)).toString(), 'one');
  await pollFlows(p, 1);
  const a3 = await socksFrom('127.0.0.1');
  t.after(() => a3.s.destroy());
  assert.equal(a3.rep, 0x00, 'the slot of 127.0.0.1 is free again');
  a3.s.destroy();
  b1.s.destroy();
  await flowsDrained(p.hf);
});

test('idleTimeout closes an idle tunnel (either protocol); traffic keeps a tunnel open', async (t) => {
  const IDLE = 800;
  const p = await startHf(t, { limits: { idleTimeout: IDLE } });
  const echo = await echoServer(t);
  // SOCKS: exchange, then go quiet
  const a = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  a.socket.write('ping');
  assert.equal((await readN(a.socket, 4)).toString(), 'ping');
  const quietSince = Date.now();
  const ms = await closedAfter(a.socket, quietSince);
  assert.ok(ms >= IDLE - 50 && ms <= IDLE + SLACK_MS, `idle SOCKS tunnel closed after ${ms} ms (idleTimeout ${IDLE})`);
  t.diagnostic(`idle SOCKS tunnel closed ${ms} ms after its last byte (idleTimeout ${IDLE} ms)`);

  // HTTP CONNECT: same
  const s = await connectTo(p.port);
  s.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
  await readN(s, 39);
  const t1 = Date.now();
  const ms2 = await closedAfter(s, t1);
  assert.ok(ms2 >= IDLE - 50 && ms2 <= IDLE + SLACK_MS, `idle CONNECT tunnel closed after ${ms2} ms`);

  // a busy tunnel: a byte every IDLE/3 for 3 * IDLE stays open
  const b = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => b.socket.destroy());
  for (let i = 0; i < 9; i++) {
    await new Promise((r) => setTimeout(r, IDLE / 3));
    const echoed = once(b.socket, 'data', { signal: AbortSignal.timeout(2000) });
    b.socket.write('.');
    assert.equal(String((await echoed)[0]), '.', `byte ${i} echoed`);
  }
  assert.equal(b.socket.destroyed, false);
  b.socket.end();
  await readAll(b.socket);
  await flowsDrained(p.hf);
  assert.equal(p.hf.counters.idleTimeouts, 2);
  const reasons = p.logs.byMsg('flow close').map((l) => l.reason);
  assert.equal(reasons.filter((r) => r === 'idle').length, 2, `close reasons ${JSON.stringify(reasons)}`);
});
