// Proxy authentication (issue 7): SOCKS5 username/password (RFC 1929) with the `socks` client,
// curl and raw bytes; HTTP Proxy-Authorization Basic with curl (-x and -p -x); interleaved
// logins; users from a file and from an environment variable; holdfast's own pages from a
// client that is really not loopback (a peer network namespace).
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SocksClient } from 'socks';
import { parseConfig } from '../../src/config.js';
import {
  connectTo,
  connectV4,
  drain,
  PeerNs,
  rawHttp,
  socksLogin,
  startHf,
  statusOf,
  userPassBytes,
} from '../helpers/hardening.js';
import { run } from '../helpers/proc.js';
import { flowsDrained } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { echoServer, httpServer } from '../helpers/servers.js';
import { readAll, readN } from '../helpers/socks-client.js';

const USERS = { auth: { users: [{ username: 'alice', password: 'wonder land:é' }] } };

test('SOCKS5 with the socks client: right credentials tunnel; wrong and missing ones are refused', async (t) => {
  const p = await startHf(t, USERS);
  const echo = await echoServer(t);
  const base = { proxy: { host: '127.0.0.1', port: p.port, type: 5 as const }, command: 'connect' as const, destination: { host: '127.0.0.1', port: echo.port }, timeout: 5000 };

  const ok = await SocksClient.createConnection({ ...base, proxy: { ...base.proxy, userId: 'alice', password: 'wonder land:é' } });
  t.after(() => ok.socket.destroy());
  ok.socket.end('through');
  assert.equal((await readAll(ok.socket)).toString(), 'through');

  await assert.rejects(
    SocksClient.createConnection({ ...base, proxy: { ...base.proxy, userId: 'alice', password: 'wonder land:e' } }),
    /Authentication failed/i,
  );
  await assert.rejects(SocksClient.createConnection({ ...base, proxy: { ...base.proxy, userId: 'mallory', password: 'wonder land:é' } }), /Authentication failed/i);
  // without credentials the client offers no-auth only: the proxy has no acceptable method
  await assert.rejects(SocksClient.createConnection(base), /auth|rejected|method/i);

  await flowsDrained(p.hf);
  assert.equal(p.hf.counters.authFailures, 3);
  assert.equal(p.logs.byMsg('flow open').length, 1, 'only the authenticated client opened a flow');
  // the password never reaches the log
  assert.ok(!JSON.stringify(p.logs.lines).includes('wonder land'), 'no password in the log');
});

test('SOCKS5 raw bytes: method 02 chosen, RFC 1929 status 00 / 01, 0xFF without a user/password offer', async (t) => {
  const p = await startHf(t, USERS);
  const echo = await echoServer(t);

  const good = await socksLogin(p.port, 'alice', 'wonder land:é', connectV4('127.0.0.1', echo.port));
  t.after(() => good.socket.destroy());
  assert.deepEqual([...good.method], [0x05, 0x02]);
  assert.deepEqual([...good.status], [0x01, 0x00]);
  assert.equal(good.reply[1], 0x00, 'CONNECT succeeded');
  good.socket.end('x');
  assert.equal((await readAll(good.socket)).toString(), 'x');

  const bad = await socksLogin(p.port, 'alice', 'wrong', connectV4('127.0.0.1', echo.port));
  assert.deepEqual([...bad.status], [0x01, 0x01], 'RFC 1929 failure status');
  assert.equal((await drain(bad.socket, 3000)).timedOut, false, 'closed after the failure status');

  // an empty password on the wire (curl sends PLEN 0 for "user:") is refused like any wrong one
  const empty = await socksLogin(p.port, 'alice', '', connectV4('127.0.0.1', echo.port));
  assert.deepEqual([...empty.status], [0x01, 0x01]);

  // offering both methods: the proxy picks user/password
  const both = await connectTo(p.port);
  both.write(Buffer.from([0x05, 0x02, 0x00, 0x02]));
  assert.deepEqual([...(await readN(both, 2))], [0x05, 0x02]);
  both.destroy();

  // offering only no-auth: 05 FF, then close
  const none = await connectTo(p.port);
  const d = drain(none, 3000);
  none.write(Buffer.from([0x05, 0x01, 0x00]));
  const r = await d;
  assert.equal(r.timedOut, false);
  assert.deepEqual([...r.bytes], [0x05, 0xff]);

  // a login pipelined with the request in one write, wrong password: no CONNECT happens
  const piped = await connectTo(p.port);
  const d2 = drain(piped, 3000);
  piped.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x02]), userPassBytes('alice', 'nope'), connectV4('127.0.0.1', echo.port)]));
  assert.deepEqual([...(await d2).bytes], [0x05, 0x02, 0x01, 0x01]);

  await flowsDrained(p.hf);
  assert.equal(p.logs.byMsg('flow open').length, 1);
  assert.equal(p.hf.counters.authFailures, 4);
});

test('SOCKS5 with curl: --proxy-user right, wrong, missing', async (t) => {
  const p = await startHf(t, USERS);
  const srv = await httpServer(t);
  const url = `http://127.0.0.1:${srv.port}/socks`;
  const curl = (extra: string[]) => run('curl', ['-sS', '--max-time', '5', '--socks5', `127.0.0.1:${p.port}`, ...extra, url], { allowFail: true });
  const ok = await curl(['--proxy-user', 'alice:wonder land:é']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).url, '/socks');
  const wrong = await curl(['--proxy-user', 'alice:nope']);
  assert.equal(wrong.code, 97, `curl exit 97 (proxy handshake error): ${wrong.stderr}`);
  const missing = await curl([]);
  assert.notEqual(missing.code, 0, 'no credentials: refused');
  assert.equal(srv.seen.length, 1, 'only the authenticated request reached the server');
});

test('HTTP with curl -x and -p -x: right credentials pass; wrong and missing get 407 with Proxy-Authenticate', async (t) => {
  const p = await startHf(t, USERS);
  const srv = await httpServer(t);
  const url = `http://127.0.0.1:${srv.port}/h`;
  const curl = (args: string[]) => run('curl', ['-sS', '--max-time', '5', '-D', '-', ...args, url], { allowFail: true });

  // plain forward
  const ok = await curl(['-x', p.url, '-U', 'alice:wonder land:é']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^HTTP\/1\.1 200 /);
  assert.equal(srv.seen.at(-1)!.headers['proxy-authorization'], undefined, 'Proxy-Authorization not forwarded');
  for (const args of [['-x', p.url, '-U', 'alice:wrong'], ['-x', p.url]]) {
    const r = await curl(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 407 /, `${args.join(' ')}: 407`);
    assert.match(r.stdout, /^proxy-authenticate: Basic realm="holdfast"/im);
  }
  assert.equal(srv.seen.length, 1);

  // CONNECT tunnel
  const tun = await curl(['-p', '-x', p.url, '-U', 'alice:wonder land:é']);
  assert.equal(tun.code, 0, tun.stderr);
  assert.match(tun.stdout, /200 Connection established/);
  assert.equal(srv.seen.length, 2);
  for (const args of [['-p', '-x', p.url, '-U', 'alice:wrong'], ['-p', '-x', p.url]]) {
    const r = await curl(['-w', '%{http_connect}', ...args]);
    assert.equal(r.code, 56, `${args.join(' ')}: curl exit 56 (CONNECT refused): ${r.stderr}`);
    assert.match(r.stdout, /407$/, 'the CONNECT answer was 407');
    assert.match(r.stdout, /Proxy-Authenticate: Basic realm="holdfast"/i);
  }
  assert.equal(srv.seen.length, 2, 'refused tunnels reached nothing');
  // raw: a malformed Basic value is just wrong credentials
  for (const v of ['Basic', 'Basic !!!', 'Bearer abc', `Basic ${Buffer.from('alice').toString('base64')}`]) {
    const r = await rawHttp(p.port, `CONNECT 127.0.0.1:${srv.port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${v}\r\n\r\n`);
    assert.equal(statusOf(r.text), 407, `${v}: ${r.text.slice(0, 60)}`);
  }
  await flowsDrained(p.hf);
  assert.equal(p.hf.counters.authFailures, 8);
});

test('interleaved SOCKS5 logins: each client sees only its own result', async (t) => {
  const p = await startHf(t, { auth: { users: [{ username: 'alice', password: 'a-pass' }, { username: 'bob', password: 'b-pass' }] } });
  const echo = await echoServer(t);

  // A greets and gets 05 02; B logs in fully and tunnels; then A finishes with a wrong password
  const a = await connectTo(p.port);
  a.write(Buffer.from([0x05, 0x01, 0x02]));
  assert.deepEqual([...(await readN(a, 2))], [0x05, 0x02]);
  // A sends half of its login (user name only) before B begins
  const aLogin = userPassBytes('alice', 'b-pass');
  a.write(aLogin.subarray(0, 4));

  const b = await socksLogin(p.port, 'bob', 'b-pass', connectV4('127.0.0.1', echo.port));
  t.after(() => b.socket.destroy());
  assert.deepEqual([...b.status], [0x01, 0x00], 'B logged in');
  assert.equal(b.reply[1], 0x00, 'B tunnels');

  const aDone = drain(a, 3000);
  a.write(aLogin.subarray(4));
  assert.deepEqual([...(await aDone).bytes], [0x01, 0x01], "A's password (B's) with A's name: refused");

  b.socket.end('bob data');
  assert.equal((await readAll(b.socket)).toString(), 'bob data');

  // the other way round: C greets, D fails, C succeeds
  const c = await connectTo(p.port);
  t.after(() => c.destroy());
  c.write(Buffer.from([0x05, 0x01, 0x02]));
  assert.deepEqual([...(await readN(c, 2))], [0x05, 0x02]);
  const d = await socksLogin(p.port, 'bob', 'a-pass', connectV4('127.0.0.1', echo.port));
  assert.deepEqual([...d.status], [0x01, 0x01]);
  c.write(Buffer.concat([userPassBytes('alice', 'a-pass'), connectV4('127.0.0.1', echo.port)]));
  assert.deepEqual([...(await readN(c, 2))], [0x01, 0x00]);
  assert.equal((await readN(c, 10))[1], 0x00);
  c.end('carol');
  assert.equal((await readAll(c)).toString(), 'carol');

  // many at once, alternating right and wrong, in random interleavings of their writes
  const results = await Promise.all(
    Array.from({ length: 40 }, async (_, i) => {
      const s = await connectTo(p.port);
      const right = i % 2 === 0;
      const bytes = Buffer.concat([Buffer.from([0x05, 0x01, 0x02]), userPassBytes(right ? 'alice' : 'bob', right ? 'a-pass' : 'a-pass'), connectV4('127.0.0.1', echo.port)]);
      const out = drain(s, 5000);
      for (let k = 0; k < bytes.length; k += 1 + (i % 5)) {
        s.write(bytes.subarray(k, k + 1 + (i % 5)));
        await new Promise((r) => setImmediate(r));
      }
      s.end(right ? `ok${i}` : 'never');
      const r = await out;
      return { i, right, bytes: r.bytes };
    }),
  );
  for (const r of results) {
    if (r.right) {
      assert.deepEqual([...r.bytes.subarray(0, 4)], [0x05, 0x02, 0x01, 0x00], `client ${r.i}: login ok`);
      assert.equal(r.bytes[5], 0x00, `client ${r.i}: CONNECT ok`);
      assert.equal(r.bytes.subarray(14).toString(), `ok${r.i}`, `client ${r.i}: its own echo`);
    } else {
      assert.deepEqual([...r.bytes], [0x05, 0x02, 0x01, 0x01], `client ${r.i}: refused, nothing else`);
    }
  }
  await flowsDrained(p.hf);
});

test('users from auth.usersFile and auth.usersEnv (inline users too)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hf-auth-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'users');
  writeFileSync(file, '# holdfast users\nfile-user:file:pass\r\n\n  other:x  \n');
  const envName = `HF_TEST_USERS_${process.pid}`;
  process.env[envName] = 'env-user:env-pass,env2:p2';
  t.after(() => delete process.env[envName]);
  const p = await startHf(t, { auth: { users: [{ username: 'inline', password: 'i' }], usersFile: file, usersEnv: envName } });
  const echo = await echoServer(t);
  const cases: Array<[string, string, boolean]> = [
    ['inline', 'i', true],
    ['file-user', 'file:pass', true],
    ['other', 'x', true],
    ['env-user', 'env-pass', true],
    ['env2', 'p2', true],
    ['file-user', 'file', false],
    ['env-user', 'env-pass,env2', false],
    ['# holdfast users', '', false],
  ];
  for (const [user, pass, ok] of cases) {
    const r = await socksLogin(p.port, user, pass, connectV4('127.0.0.1', echo.port));
    r.socket.destroy();
    assert.equal(r.status[1], ok ? 0x00 : 0x01, `${user}:${pass} ${ok ? 'accepted' : 'refused'}`);
  }
  const curl = await run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', '-x', p.url, '-U', 'env2:p2', `http://127.0.0.1:${echo.port}/`], { allowFail: true });
  assert.notEqual(curl.stdout, '407', 'env user accepted over HTTP too');
  await flowsDrained(p.hf);

  // an unset variable or an unreadable file stops the start, naming the key (not the secret)
  delete process.env[envName];
  await assert.rejects(startHf(t, { auth: { usersEnv: envName } }), (e: Error) => e.name === 'ConfigError' && e.message.includes('auth.usersEnv'));
  await assert.rejects(startHf(t, { auth: { usersFile: join(dir, 'missing') } }), (e: Error) => e.name === 'ConfigError' && /auth\.usersFile.*ENOENT/.test(e.message));
  writeFileSync(file, 'a-password-without-user\n');
  await assert.rejects(startHf(t, { auth: { usersFile: file } }), (e: Error) => {
    assert.match(e.message, /auth\.usersFile/);
    assert.ok(!e.message.includes('a-password'), `the line is not echoed: ${e.message}`);
    return true;
  });
});

const peerSkip = sandboxSkip();

test("holdfast's own pages from a non-loopback client need Authorization (except /proxy.pac); loopback ones do not", { skip: peerSkip, timeout: 60_000 }, async (t) => {
  const peer = await PeerNs.create(t);
  const p = await startHf(t, USERS, { level: 'info' });
  // a second listener on the veth address (auth is set, so a non-loopback listener is allowed)
  await p.hf.reload(parseConfig({ listen: [`127.0.0.1:${p.port}`, `${peer.localIp}:0`], ...USERS }, 'test'));
  assert.ok(p.hf.listeners.some((l) => l.bound().port === p.port), 'the loopback listener stayed');
  const outer = p.hf.listeners.find((l) => l.bound().host === peer.localIp);
  assert.ok(outer, 'listening on the veth address');
  const base = `http://${peer.localIp}:${outer.bound().port}`;
  const fromPeer = (args: string[]) => peer.exec('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', ...args], { allowFail: true });

  assert.equal((await fromPeer([`${base}/status`])).stdout, '401', 'peer without credentials: 401');
  assert.equal((await fromPeer(['-u', 'alice:wrong', `${base}/status`])).stdout, '401', 'peer with wrong credentials: 401');
  assert.equal((await fromPeer(['-u', 'alice:wonder land:é', `${base}/status`])).stdout, '200', 'peer with credentials: 200');
  const pac = (await fromPeer([`${base}/proxy.pac`])).stdout;
  assert.equal(pac, '200', '/proxy.pac needs no credentials');
  // and the proxy itself from the peer: 407 without Proxy-Authorization
  const srv = await httpServer(t, undefined, peer.localIp);
  assert.equal((await fromPeer(['-x', base, `http://${peer.localIp}:${srv.port}/`])).stdout, '407');
  assert.equal((await fromPeer(['-x', base, '-U', 'alice:wonder land:é', `http://${peer.localIp}:${srv.port}/`])).stdout, '200');

  // loopback clients read /status without credentials, on either listener address
  const local = await run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', `${p.url}/status`]);
  assert.equal(local.stdout, '200');
  // the peer's address is what holdfast saw (not loopback)
  const fromPeerFlows = p.logs.lines.filter((l) => l.msg === 'flow open' && String(l.client).startsWith(`${peer.peerIp}:`));
  assert.equal(fromPeerFlows.length, 1, 'the one authenticated forward from the peer, seen from its own address');
  assert.equal(p.hf.counters.authFailures, 3);
  await flowsDrained(p.hf);
});
