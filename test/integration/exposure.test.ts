// Safe defaults (issue 7): no open proxy by accident (a non-loopback listener without auth is a
// ConfigError unless allowUnauthenticated), the `clients` allow-list, and loop refusal: a SOCKS
// CONNECT, an HTTP CONNECT or a plain forward to holdfast's own listener.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../../src/config.js';
import {
  connectName,
  connectTo,
  connectV4,
  connectV6,
  drain,
  fixedResolver,
  PeerNs,
  rawHttp,
  startHf,
  statusOf,
} from '../helpers/hardening.js';
import { run } from '../helpers/proc.js';
import { flowsDrained } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { echoServer, httpServer } from '../helpers/servers.js';
import { readAll, readN } from '../helpers/socks-client.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

const isOpenProxyError = (listen: string) => (e: Error) => {
  assert.equal(e.name, 'ConfigError');
  assert.ok(e.message.startsWith('listen: '), `names the key: ${e.message}`);
  assert.ok(e.message.includes(listen), `names the listener ${listen}: ${e.message}`);
  assert.match(e.message, /auth users/);
  assert.match(e.message, /allowUnauthenticated: true/);
  return true;
};

test('a non-loopback listener without auth is refused at start, naming the key and the way out', async (t) => {
  for (const [listen, shown] of [
    [['0.0.0.0:0'], '0.0.0.0:0'],
    [['[::]:0'], '[::]:0'],
    [['10.77.250.1:0'], '10.77.250.1:0'],
    [['127.0.0.1:0', '0.0.0.0:0'], '0.0.0.0:0'],
  ] as const) {
    await assert.rejects(startHf(t, { listen: [...listen] }), isOpenProxyError(shown), `listen ${listen.join(', ')}`);
  }
  // loopback in every spelling is fine
  for (const listen of ['127.0.0.1:0', '[::1]:0', 'localhost:0', '127.0.0.2:0']) {
    const p = await startHf(t, { listen: [listen] });
    assert.equal(p.hf.listeners.length, 1, listen);
  }
  // the CLI: exit 2, the reason on stderr, nothing listening
  const r = await run(process.execPath, [CLI, 'start', '--listen', '0.0.0.0:0'], { allowFail: true, timeoutMs: 10_000 });
  assert.equal(r.code, 2, `exit 2 for a config error: ${r.stderr}`);
  assert.match(r.stderr, /^holdfast: listen: 0\.0\.0\.0:0 is reachable from other hosts/m);
  assert.match(r.stderr, /allowUnauthenticated/);
});

const skip = sandboxSkip();

test('allowUnauthenticated: true, or auth users, allow a non-loopback listener', { skip }, async (t) => {
  const echo = await echoServer(t);
  const open = await startHf(t, { listen: ['0.0.0.0:0'], allowUnauthenticated: true });
  const s = await connectTo(open.port, '127.0.0.1');
  s.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), connectV4('127.0.0.1', echo.port)]));
  assert.equal((await readN(s, 12))[3], 0x00);
  s.end('open');
  assert.equal((await readAll(s)).toString(), 'open');
  const authed = await startHf(t, { listen: ['0.0.0.0:0'], auth: { users: [{ username: 'u', password: 'p' }] } });
  assert.equal(authed.hf.listeners[0].bound().host, '0.0.0.0');
  // and a reload that would make an open proxy is refused, keeping the old settings
  await assert.rejects(authed.hf.reload(parseConfig({ listen: ['0.0.0.0:0'] }, 'test')), isOpenProxyError('0.0.0.0:0'));
  const g = await connectTo(authed.port);
  g.write(Buffer.from([0x05, 0x01, 0x00]));
  assert.deepEqual([...(await drain(g, 3000)).bytes], [0x05, 0xff], 'auth still required after the refused reload');
  await flowsDrained(open.hf);
});

test('clients allow-list: other client addresses are closed without a byte, counted', async (t) => {
  const echo = await echoServer(t);
  const p = await startHf(t, { clients: ['10.0.0.0/8', 'fd00::/8'] });
  for (const bytes of [Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), connectV4('127.0.0.1', echo.port)]), Buffer.from('GET /status HTTP/1.1\r\nHost: x\r\n\r\n')]) {
    const s = await connectTo(p.port);
    const d = drain(s, 3000);
    s.write(bytes);
    const r = await d;
    assert.equal(r.timedOut, false, 'closed');
    assert.equal(r.bytes.length, 0, 'not one byte of answer');
  }
  assert.equal(p.hf.counters.clientsRefused, 2);
  assert.equal(p.logs.byMsg('client refused').length, 2);
  assert.equal(p.hf.flows.size, 0);
  assert.equal(p.logs.byMsg('flow open').length, 0);

  // one loopback address allowed, another not
  const q = await startHf(t, { clients: ['127.0.0.2'] });
  const ok = await connectTo(q.port, '127.0.0.1', '127.0.0.2');
  ok.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), connectV4('127.0.0.1', echo.port)]));
  assert.equal((await readN(ok, 12))[3], 0x00, '127.0.0.2 is served');
  ok.end('two');
  assert.equal((await readAll(ok)).toString(), 'two');
  const curl = await run('curl', ['-sS', '--max-time', '5', `${q.url}/status`], { allowFail: true });
  assert.notEqual(curl.code, 0, `127.0.0.1 is not: curl exit ${curl.code} ${curl.stderr.trim()}`);
  assert.equal(curl.stdout, '');
  // a reload changes the list for new connections
  await q.hf.reload(parseConfig({ listen: ['127.0.0.1:0'], clients: ['127.0.0.0/8'] }, 'test'));
  const again = await run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', `${q.url}/status`]);
  assert.equal(again.stdout, '200');
  await flowsDrained(q.hf);
});

test('clients allow-list against a client that is really elsewhere (peer namespace)', { skip, timeout: 60_000 }, async (t) => {
  const peer = await PeerNs.create(t);
  const p = await startHf(t, { listen: ['0.0.0.0:0'], allowUnauthenticated: true, clients: ['127.0.0.0/8'] }, { level: 'info' });
  const url = `http://${peer.localIp}:${p.port}/status`;
  const refused = await peer.exec('curl', ['-sS', '--max-time', '5', url], { allowFail: true });
  assert.notEqual(refused.code, 0, 'the peer is refused');
  assert.equal(p.hf.counters.clientsRefused, 1);
  assert.equal(p.logs.byMsg('client refused')[0].client, peer.peerIp);
  await p.hf.reload(parseConfig({ listen: ['0.0.0.0:0'], allowUnauthenticated: true, clients: ['127.0.0.0/8', `${peer.peerIp}/32`] }, 'test'));
  const allowed = await peer.exec('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', url], { allowFail: true });
  assert.equal(allowed.stdout, '200', allowed.stderr);
});

test('loop refusal: SOCKS5 CONNECT to holdfast itself gets 0x02 (address, name, IPv4-mapped IPv6)', async (t) => {
  const p = await startHf(t);
  const echo = await echoServer(t);
  const mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
  for (const [what, req] of [
    ['127.0.0.1', connectV4('127.0.0.1', p.port)],
    ['localhost', connectName('localhost', p.port)],
    ['::ffff:127.0.0.1', connectV6(mapped, p.port)],
  ] as const) {
    const s = await connectTo(p.port);
    const d = drain(s, 5000);
    s.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), req]));
    const r = await d;
    assert.equal(r.bytes[3], 0x02, `${what}: reply 0x02 (not allowed), got ${r.bytes.toString('hex')}`);
    assert.equal(r.timedOut, false, `${what}: closed`);
  }
  // the same port on another address is not holdfast: not refused for being a loop
  const other = await connectTo(p.port);
  other.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), connectV4('127.0.0.1', echo.port)]));
  assert.equal((await readN(other, 12))[3], 0x00);
  other.destroy();
  await flowsDrained(p.hf);
  const closes = p.logs.byMsg('flow close').filter((l) => l.code === 'HF_NOT_ALLOWED');
  assert.equal(closes.length, 3);
  assert.equal(p.logs.byMsg('flow open').length, 1, 'no loop flow was ever pinned');
});

test('loop refusal: HTTP CONNECT to holdfast itself gets 403', async (t) => {
  const p = await startHf(t, {}, { resolver: fixedResolver({ 'loop.test': '127.0.0.1' }) });
  for (const target of [`127.0.0.1:${p.port}`, `localhost:${p.port}`, `[::ffff:127.0.0.1]:${p.port}`, `[0:0:0:0:0:ffff:7f00:1]:${p.port}`, `loop.test:${p.port}`]) {
    const r = await rawHttp(p.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    assert.equal(statusOf(r.text), 403, `${target}: ${r.text.slice(0, 60)}`);
    assert.equal(r.timedOut, false);
  }
  await flowsDrained(p.hf);
  assert.equal(p.logs.byMsg('flow open').length, 0);
});

test('loop refusal: a plain forward to holdfast itself is answered locally or refused with 403, never sent round', async (t) => {
  const srv = await httpServer(t);
  const p = await startHf(t, {}, { resolver: fixedResolver({ 'loop.test': '127.0.0.1', 'origin.test': '127.0.0.1' }) });
  const curl = (url: string) => run('curl', ['-sS', '--max-time', '5', '-g', '-o', '/dev/null', '-w', '%{http_code}', '-x', p.url, url], { allowFail: true });
  // addressed to the listener by address: holdfast's own page, no flow
  assert.equal((await curl(`http://127.0.0.1:${p.port}/status`)).stdout, '200');
  assert.equal((await curl(`http://[::ffff:127.0.0.1]:${p.port}/status`)).stdout, '200');
  // a name that only resolution shows to be holdfast: refused, not forwarded to itself
  const viaName = await rawHttp(p.port, `GET http://loop.test:${p.port}/status HTTP/1.1\r\nHost: loop.test:${p.port}\r\nConnection: close\r\n\r\n`);
  assert.equal(statusOf(viaName.text), 403, viaName.text.slice(0, 80));
  assert.match(viaName.text, /HF_NOT_ALLOWED/);
  // the same name to another port is an ordinary forward
  assert.equal((await curl(`http://origin.test:${srv.port}/x`)).stdout, '200');
  assert.equal(srv.seen.length, 1);
  await flowsDrained(p.hf);
  const opens = p.logs.byMsg('flow open');
  assert.deepEqual(opens.map((l) => l.dst), [`origin.test:${srv.port}`], 'only the ordinary forward was pinned');
  const refused = p.logs.byMsg('flow close').filter((l) => l.code === 'HF_NOT_ALLOWED');
  assert.equal(refused.length, 1);
});

test('loop refusal with a wildcard listener: every local address is holdfast, a remote host on the same port is not', { skip, timeout: 60_000 }, async (t) => {
  const peer = await PeerNs.create(t);
  const p = await startHf(t, { listen: ['0.0.0.0:0'], allowUnauthenticated: true }, { level: 'info' });
  // a server in the peer namespace on holdfast's own port number
  const server = peer.spawn([
    process.execPath,
    '-e',
    `require('net').createServer({allowHalfOpen:true},(s)=>{s.on('error',()=>{});s.pipe(s)}).listen(${p.port},'${peer.peerIp}',()=>console.log('listening'))`,
  ]);
  t.after(() => server.kill());
  await server.waitForLine((l) => l === 'listening', 5000, 'the peer echo server');
  const socks = async (req: Buffer) => {
    const s = await connectTo(p.port);
    s.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), req]));
    const r = await readN(s, 12);
    return { s, rep: r[3] };
  };
  for (const ip of ['127.0.0.1', '127.0.0.5', peer.localIp]) {
    const r = await socks(connectV4(ip, p.port));
    assert.equal(r.rep, 0x02, `${ip}:${p.port} is holdfast`);
    r.s.destroy();
  }
  const remote = await socks(connectV4(peer.peerIp, p.port));
  assert.equal(remote.rep, 0x00, `${peer.peerIp}:${p.port} is another host: tunnel`);
  remote.s.end('far');
  assert.equal((await readAll(remote.s)).toString(), 'far');
  const c = await rawHttp(p.port, `CONNECT ${peer.localIp}:${p.port} HTTP/1.1\r\n\r\n`);
  assert.equal(statusOf(c.text), 403);
  await flowsDrained(p.hf);
});
