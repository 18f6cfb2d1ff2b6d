import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { test } from 'node:test';
import { run } from '../helpers/proc.js';
import { flowsDrained, startProxy } from '../helpers/proxy.js';
import { closedPort, echoServer, httpServer } from '../helpers/servers.js';
import { readAll, readN } from '../helpers/socks-client.js';

test('plain HTTP forward with curl -x: hop-by-hop and proxy headers are not forwarded', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t);
  const r = await run('curl', [
    '-sS', '--max-time', '10', '-x', p.url,
    '-H', 'Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=',
    '-H', 'Proxy-Connection: keep-alive',
    '-H', 'Connection: x-private',
    '-H', 'X-Private: must-not-pass',
    '-H', 'X-Kept: yes',
    '-H', 'Cookie: a=1',
    '-H', 'TE: trailers',
    `http://127.0.0.1:${srv.port}/path?q=1`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const seen = srv.seen[0];
  assert.equal(seen.url, '/path?q=1');
  assert.equal(seen.headers['x-kept'], 'yes');
  assert.equal(seen.headers['cookie'], 'a=1');
  assert.equal(seen.headers['host'], `127.0.0.1:${srv.port}`);
  for (const h of ['proxy-authorization', 'proxy-connection', 'x-private', 'te']) {
    assert.equal(seen.headers[h], undefined, `${h} was forwarded`);
  }
  assert.match(String(seen.headers['via']), /holdfast/);
  await flowsDrained(p.hf);
  const open = p.logs.byMsg('flow open');
  assert.equal(open[0].kind, 'http-forward');
  assert.equal(open[0].egress, 'lo');
  // the secret never reaches the log
  assert.ok(!JSON.stringify(p.logs.lines).includes('dXNlcjpzZWNyZXQ='));
});

test('request and response bodies stream both ways (chunked upload, sized download)', async (t) => {
  const p = await startProxy(t);
  const big = randomBytes(8 * 1024 * 1024);
  const srv = await httpServer(t, (_req, res, body) => {
    const digest = createHash('sha256').update(body).digest('hex');
    res.writeHead(200, { 'content-length': String(big.length), 'x-upload-sha256': digest });
    res.end(big);
  });
  const upload = randomBytes(5 * 1024 * 1024 + 3);
  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: p.port,
      method: 'POST',
      path: `http://127.0.0.1:${srv.port}/up`,
      headers: { 'transfer-encoding': 'chunked' },
    });
    req.on('response', resolve);
    req.on('error', reject);
    // written in pieces: the proxy must not need the whole body before it starts
    for (let i = 0; i < upload.length; i += 65_536) req.write(upload.subarray(i, i + 65_536));
    req.end();
  });
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['x-upload-sha256'], createHash('sha256').update(upload).digest('hex'));
  assert.equal(srv.seen[0].bodyBytes, upload.length);
  assert.equal(body.length, big.length);
  assert.ok(body.equals(big));
  await flowsDrained(p.hf);
  const close = p.logs.byMsg('flow close')[0];
  assert.equal(close.bytesDown, big.length);
  assert.equal(close.bytesUp, upload.length);
});

test('keep-alive to the client: two requests on one client connection', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t);
  const r = await run('curl', [
    '-sS', '-v', '--max-time', '10', '-x', p.url,
    `http://127.0.0.1:${srv.port}/one`, `http://127.0.0.1:${srv.port}/two`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Re-using existing connection/);
  assert.deepEqual(srv.seen.map((s) => s.url), ['/one', '/two']);
  await flowsDrained(p.hf);
  assert.equal(p.logs.byMsg('flow close').length, 2);
});

test('forwarded requests from separate client connections share one upstream connection (the pool of their interface)', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t);
  let upstreamConnections = 0;
  srv.server.on('connection', () => upstreamConnections++);
  // one request per client connection (agent: false), one after the other: the second must be
  // served on the upstream connection the first left free, not on a new dial
  const get = (path: string) =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: p.port, agent: false, path: `http://127.0.0.1:${srv.port}${path}` });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  assert.equal(await get('/first'), 200);
  await flowsDrained(p.hf);
  assert.equal(await get('/second'), 200);
  await flowsDrained(p.hf);
  assert.deepEqual(srv.seen.map((s) => s.url), ['/first', '/second']);
  assert.equal(upstreamConnections, 1);
  const open = p.logs.byMsg('flow open');
  assert.deepEqual(open.map((l) => [l.kind, l.egress]), [['http-forward', 'lo'], ['http-forward', 'lo']]);
});

test('plain HTTP forward to an IPv6 origin ([::1]): the pinned socket reaches undici', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t, undefined, '::1');
  const r = await run('curl', ['-sS', '--max-time', '10', '-x', p.url, `http://[::1]:${srv.port}/six`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).url, '/six');
  assert.equal(srv.seen[0].peer, '::1');
  await flowsDrained(p.hf);
  const open = p.logs.byMsg('flow open');
  assert.equal(open[0].kind, 'http-forward');
  assert.equal(open[0].ip, '::1');
});

test('CONNECT tunnel with curl -p -x; 502 with a body when refused; 400 for a bad target', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t);
  const ok = await run('curl', ['-sS', '--max-time', '10', '-p', '-x', p.url, `http://127.0.0.1:${srv.port}/tunnel`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).url, '/tunnel');

  const port = await closedPort();
  const s = connect(p.port, '127.0.0.1');
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const text = (await readAll(s)).toString();
  assert.match(text, /^HTTP\/1\.1 502 /);
  assert.match(text, /HF_REFUSED/);

  const s2 = connect(p.port, '127.0.0.1');
  t.after(() => s2.destroy());
  await once(s2, 'connect');
  s2.write('CONNECT nonsense HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match((await readAll(s2)).toString(), /^HTTP\/1\.1 400 /);
  await flowsDrained(p.hf);
});

test('CONNECT: bytes sent with the request head are not lost; half-close works', async (t) => {
  const p = await startProxy(t);
  const echo = await echoServer(t);
  const s = connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true });
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\nearly-bytes`);
  const head = (await readN(s, 'HTTP/1.1 200 Connection established\r\n\r\n'.length)).toString();
  assert.match(head, /^HTTP\/1\.1 200 /);
  s.end('|late');
  assert.equal((await readAll(s)).toString(), 'early-bytes|late');
});

test('CONNECT whose head comes in pieces (read by Node\'s parser, not in one chunk): the same tunnel; an oversized one is 431', async (t) => {
  const p = await startProxy(t);
  const echo = await echoServer(t);
  const s = connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
  t.after(() => s.destroy());
  await once(s, 'connect');
  const head = `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`;
  // three writes, apart: the first chunk holdfast reads is not a whole head
  for (const piece of [head.slice(0, 9), head.slice(9, 30), head.slice(30) + 'early']) {
    s.write(piece);
    await new Promise((r) => setTimeout(r, 50));
  }
  const reply = (await readN(s, 'HTTP/1.1 200 Connection established\r\n\r\n'.length)).toString();
  assert.match(reply, /^HTTP\/1\.1 200 /);
  s.end('|late');
  assert.equal((await readAll(s)).toString(), 'early|late');

  const big = connect(p.port, '127.0.0.1');
  t.after(() => big.destroy());
  await once(big, 'connect');
  big.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
  assert.match((await readAll(big)).toString(), /^HTTP\/1\.1 431 /);
  await flowsDrained(p.hf);
});

test('forward to a refused port gives 502 with a short body naming the code', async (t) => {
  const p = await startProxy(t);
  const port = await closedPort();
  const r = await run('curl', ['-sS', '--max-time', '10', '-o', '-', '-w', '%{http_code}', '-x', p.url, `http://127.0.0.1:${port}/`]);
  assert.match(r.stdout, /HF_REFUSED/);
  assert.ok(r.stdout.endsWith('502'));
});

test('GET /status on the listener returns interfaces and flows as JSON', async (t) => {
  const p = await startProxy(t);
  const echo = await echoServer(t);
  // hold one tunnel open so a flow is listed
  const s = connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true });
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
  await readN(s, 39);
  const res = await fetch(`${p.url}/status`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  const st = (await res.json()) as {
    interfaces: { name: string; up: boolean; addresses: string[]; defaultRoute: unknown }[];
    flows: Record<string, unknown>[];
  };
  const lo = st.interfaces.find((i) => i.name === 'lo');
  assert.ok(lo);
  assert.equal(lo.up, true);
  assert.ok(lo.addresses.includes('127.0.0.1/8'));
  assert.ok('defaultRoute' in lo);
  assert.equal(st.flows.length, 1);
  const f = st.flows[0];
  for (const k of ['id', 'kind', 'client', 'dst', 'ip', 'egress', 'src', 'placedBy', 'startedAt', 'bytesUp', 'bytesDown']) {
    assert.ok(k in f, `flow has ${k}`);
  }
  assert.equal(f.kind, 'http-connect');
  assert.equal(f.egress, 'lo');
  // the same page through the proxy (absolute-form to the listener itself) is served locally
  const viaProxy = await run('curl', ['-sS', '--max-time', '5', '-x', p.url, `${p.url}/status`]);
  assert.equal(JSON.parse(viaProxy.stdout).flows.length, 1);
  const missing = await fetch(`${p.url}/nope`);
  assert.equal(missing.status, 404);
  await missing.text();
});

test('oversized request headers get 431 and a close, and the proxy still serves', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t);
  const s = connect(p.port, '127.0.0.1');
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write(`GET http://127.0.0.1:${srv.port}/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
  assert.match((await readAll(s)).toString(), /^HTTP\/1\.1 431 /);
  const r = await run('curl', ['-sS', '--max-time', '5', '-x', p.url, `http://127.0.0.1:${srv.port}/after`]);
  assert.equal(r.code, 0);
  assert.equal(srv.seen.length, 1);
});

test('https:// in absolute form is refused with 400 (use CONNECT)', async (t) => {
  const p = await startProxy(t);
  const s = connect(p.port, '127.0.0.1');
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.end('GET https://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  assert.match((await readAll(s)).toString(), /^HTTP\/1\.1 400 /);
});
