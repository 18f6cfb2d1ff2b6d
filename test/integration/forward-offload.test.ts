// The forwarder's body offload (issue 17, seventh pass): a response body of known length, at
// least relay.offloadAfter bytes, leaves undici at its head and is spliced by the native relay
// straight into the client's socket, which Node's server then goes on using. Every body is a
// deterministic stream checked by SHA-256; the origin is raw TCP, so the test decides every byte
// it sends (the first body bytes in the head's segment, bytes past Content-Length, resets).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { nativeRelay } from '../../src/relay-native.js';
import { flowsDrained, startProxy, type TestProxy } from '../helpers/proxy.js';
import { keepaliveOf } from '../helpers/keepalive.js';
import { pollUntil } from '../helpers/proc.js';
import { tcpServer } from '../helpers/servers.js';
import { expectedHash, MiB, slice } from '../helpers/pattern.js';

// this file sets offloadAfter itself: a suite-wide override (HOLDFAST_RELAY_OFFLOAD_AFTER) is not for it
delete process.env.HOLDFAST_RELAY_OFFLOAD_AFTER;
const engine = nativeRelay();
// Linux with the addon built: always in CI (where a missing relay must fail, not skip)
const skip = engine || process.env.CI === 'true' ? false : 'no native relay here (not Linux, or the addon did not build)';
const opts = { skip };

const OFFLOAD_AFTER = 64 * 1024;
const started = () => engine?.info().started ?? 0;

interface OriginRequest {
  method: string;
  path: string;
  /** the first byte asked for by `Range: bytes=N-`, if any */
  rangeFrom: number | undefined;
  socket: Socket;
}

/**
 * A raw HTTP/1.1 origin: reads one request head per connection and hands it to `answer`, which
 * writes whatever it likes. Connections it accepted, and whether each has closed, are kept.
 */
async function rawOrigin(t: TestContext, answer: (r: OriginRequest) => void) {
  const requests: OriginRequest[] = [];
  const closed: Promise<unknown>[] = [];
  const srv = await tcpServer(t, (socket) => {
    socket.on('error', () => {});
    // the helper's server allows half-open sockets: close once holdfast has (a FIN or a reset)
    socket.on('end', () => socket.end());
    closed.push(new Promise((resolve) => socket.once('close', resolve)));
    let head = '';
    const onData = (c: Buffer) => {
      head += c.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.removeListener('data', onData);
      const [line, ...fields] = head.slice(0, end).split('\r\n');
      const [method, path] = line.split(' ');
      const range = fields.find((f) => /^range:/i.test(f));
      const r: OriginRequest = { method, path, rangeFrom: range ? Number(/bytes=(\d+)-/.exec(range)?.[1]) : undefined, socket };
      requests.push(r);
      answer(r);
    };
    socket.on('data', onData);
  });
  return { port: srv.port, requests, closed };
}

/**
 * Write bytes from..total of stream `seed` in chunks of varying size, with backpressure; stop at
 * `stopAt`, or when the connection fails (holdfast may close it mid-body: the tests check what
 * the client got, not what the origin managed to write).
 */
async function sendBody(s: Socket, from: number, total: number, seed: number, stopAt = total): Promise<void> {
  const deadline = AbortSignal.timeout(60_000);
  let k = 0;
  try {
    for (let pos = from; pos < stopAt && !s.destroyed; ) {
      const len = Math.min(stopAt - pos, 1 + ((k++ * 40_503) % 200_000));
      const ok = s.write(slice(pos, len, seed));
      pos += len;
      if (!ok) await once(s, 'drain', { signal: deadline });
    }
  } catch {
    // the connection failed (or the minute passed): stop writing
  }
}

interface Response {
  status: number;
  headers: Record<string, string>;
  /** body bytes received (for HEAD: none are expected) */
  bytes: number;
  hash: string;
}

/**
 * Read one response from a client connection: the head, then exactly Content-Length body bytes
 * (none for HEAD). Rejects if the connection closes first (`bytes` then tells how far it got).
 */
function readResponse(s: Socket, head = false): Promise<Response> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let res: Omit<Response, 'hash'> | undefined;
    let want = 0;
    const h = createHash('sha256');
    const done = () => {
      s.removeListener('data', onData);
      s.removeListener('close', onClose);
      resolve({ ...res!, hash: h.digest('hex') });
    };
    const onData = (c: Buffer) => {
      if (!res) {
        buf = Buffer.concat([buf, c]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [line, ...fields] = buf.subarray(0, end).toString('latin1').split('\r\n');
        const headers: Record<string, string> = {};
        for (const f of fields) headers[f.slice(0, f.indexOf(':')).toLowerCase()] = f.slice(f.indexOf(':') + 1).trim();
        res = { status: Number(line.split(' ')[1]), headers, bytes: 0 };
        want = head ? 0 : Number(headers['content-length']);
        c = buf.subarray(end + 4);
      }
      if (res.bytes + c.length > want) {
        s.destroy();
        return reject(new Error(`${res.bytes + c.length - want} byte(s) past Content-Length reached the client`));
      }
      res.bytes += c.length;
      h.update(c);
      if (res.bytes === want) done();
    };
    const onClose = () => reject(Object.assign(new Error(`the connection closed after ${res?.bytes ?? 0} body bytes`), { bytes: res?.bytes ?? 0 }));
    s.on('data', onData);
    s.once('close', onClose);
  });
}

async function client(p: TestProxy): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port: p.port });
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

function get(s: Socket, port: number, path: string, method = 'GET'): void {
  s.write(`${method} http://127.0.0.1:${port}${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
}

const fdCount = () => readdirSync('/proc/self/fd').length;

/** The keepalive timer (s left) of the connection to 127.0.0.1:port, which must be there. */
function keepaliveTo(port: number): number | undefined {
  const k = keepaliveOf('dst', `127.0.0.1:${port}`);
  assert.equal(k.connections, 1, `ss sees the connection to ${port}`);
  return k.left;
}

test('forward offload: a 24 MiB body goes to the native relay; every byte in order, none past Content-Length, and the client connection serves the next request', opts, async (t) => {
  const p = await startProxy(t, { relay: { offloadAfter: OFFLOAD_AFTER } });
  const total = 24 * MiB;
  const origin = await rawOrigin(t, (r) => {
    if (r.path === '/small') {
      r.socket.end('HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello');
      return;
    }
    // the head and the body's first 100 KiB in one write (undici reads past the head), and after
    // the body bytes no response owns: they must not reach the client
    r.socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${total}\r\n\r\n`), slice(0, 100 * 1024, 7)]));
    void sendBody(r.socket, 100 * 1024, total, 7).then(() => r.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nBAD'));
  });
  const before = started();
  const c = await client(p);
  t.after(() => c.destroy());
  get(c, origin.port, '/big');
  const big = await readResponse(c);
  assert.equal(big.status, 200);
  assert.equal(big.bytes, total);
  assert.equal(big.hash, expectedHash(total, 7), 'the body arrived whole and in order');
  assert.equal(started() - before, 1, 'the body went to the native relay');
  // the same client connection: the next response parses cleanly (no stray byte before it)
  get(c, origin.port, '/small');
  const small = await readResponse(c);
  assert.equal(small.status, 200);
  assert.equal(small.hash, createHash('sha256').update('hello').digest('hex'));
  assert.equal(started() - before, 1, 'a small body stays with undici');
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.bytesDown === total);
  assert.equal(close.reason, 'done');
  // holdfast does not reuse the connection it handed over: the origin sees it close
  await Promise.race([origin.closed[0], new Promise((_, rej) => setTimeout(() => rej(new Error('the handed-over connection stayed open')), 5000).unref())]);
  assert.equal(origin.requests.length, 2, 'the small request went on a new connection');
});

test('forward offload: HEAD and bodies under offloadAfter stay with undici (no hang on a HEAD with a large Content-Length)', opts, async (t) => {
  const p = await startProxy(t, { relay: { offloadAfter: OFFLOAD_AFTER } });
  const origin = await rawOrigin(t, (r) => {
    const n = r.path === '/under' ? OFFLOAD_AFTER - 1 : 10 * MiB;
    r.socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${n}\r\n\r\n`);
    if (r.method !== 'HEAD') void sendBody(r.socket, 0, n, 3);
  });
  const before = started();
  const c = await client(p);
  t.after(() => c.destroy());
  get(c, origin.port, '/big', 'HEAD');
  const head = await readResponse(c, true);
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], String(10 * MiB));
  get(c, origin.port, '/under');
  const under = await readResponse(c);
  assert.equal(under.hash, expectedHash(OFFLOAD_AFTER - 1, 3));
  assert.equal(started(), before, 'nothing went to the native relay');
});

test('forward offload: relay.offloadAfter 0 turns it off: a 2 MiB body stays with undici', opts, async (t) => {
  const p = await startProxy(t, { relay: { offloadAfter: 0 } });
  const origin = await rawOrigin(t, (r) => {
    r.socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${2 * MiB}\r\n\r\n`);
    void sendBody(r.socket, 0, 2 * MiB, 9);
  });
  const before = started();
  const c = await client(p);
  t.after(() => c.destroy());
  get(c, origin.port, '/file');
  const res = await readResponse(c);
  assert.equal(res.hash, expectedHash(2 * MiB, 9));
  assert.equal(started(), before, 'nothing went to the native relay');
});

test('forward offload: an upstream that resets mid-body on the native relay is resumed by Range; the client gets every byte once', opts, async (t) => {
  const p = await startProxy(t, { relay: { offloadAfter: OFFLOAD_AFTER } });
  const total = 16 * MiB;
  const cutAt = 5 * MiB + 12_345;
  const validators = `etag: "v1"\r\naccept-ranges: bytes\r\n`;
  const origin = await rawOrigin(t, (r) => {
    if (r.rangeFrom === undefined) {
      r.socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${total}\r\n${validators}\r\n`);
      void sendBody(r.socket, 0, total, 11, cutAt).then(() => r.socket.resetAndDestroy());
    } else {
      const from = r.rangeFrom;
      r.socket.write(`HTTP/1.1 206 Partial Content\r\ncontent-length: ${total - from}\r\ncontent-range: bytes ${from}-${total - 1}/${total}\r\n${validators}\r\n`);
      void sendBody(r.socket, from, total, 11);
    }
  });
  const before = started();
  const c = await client(p);
  t.after(() => c.destroy());
  get(c, origin.port, '/file');
  const res = await readResponse(c);
  assert.equal(res.bytes, total);
  assert.equal(res.hash, expectedHash(total, 11), 'the resumed body is whole, in order, nothing twice');
  assert.equal(origin.requests.length, 2);
  const from = origin.requests[1].rangeFrom!;
  assert.ok(from > OFFLOAD_AFTER && from <= cutAt, `the resume asked from what the native relay had delivered (${from})`);
  assert.equal(started() - before, 2, 'the first body and the resumed rest both went to the native relay');
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.bytesDown === total);
  assert.equal(close.reason, 'done');
  assert.equal(close.resumed, 1);
});

for (const how of ['reset', 'close'] as const) {
  test(`forward offload: without resume, an upstream that ${how === 'reset' ? 'resets' : 'closes early'} mid-body cuts the client; the flow ends as upstream error`, opts, async (t) => {
    const p = await startProxy(t, { relay: { offloadAfter: OFFLOAD_AFTER }, forward: { resume: { attempts: 0 } } });
    const total = 8 * MiB;
    const origin = await rawOrigin(t, (r) => {
      r.socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${total}\r\n\r\n`);
      void sendBody(r.socket, 0, total, 5, 2 * MiB).then(() => (how === 'reset' ? r.socket.resetAndDestroy() : r.socket.end()));
    });
    const before = started();
    const c = await client(p);
    t.after(() => c.destroy());
    get(c, origin.port, '/file');
    const err = await readResponse(c).then(
      () => assert.fail('the client got a whole body the origin never sent'),
      (e: Error & { bytes: number }) => e,
    );
    assert.ok(err.bytes > 0 && err.bytes <= 2 * MiB, `the client got what the origin sent, then its connection closed (${err.bytes})`);
    assert.equal(started() - before, 1);
    const close = await p.logs.waitFor((l) => l.msg === 'flow close');
    assert.equal(close.reason, 'upstream error');
    // coded as when undici relays the body (the relay's ENODATA, a short body, is no DNS failure)
    assert.equal(close.code, 'HF_INTERNAL', JSON.stringify(close));
  });
}

test('forward offload: /status counts what the relay moved; a client that leaves mid-body ends the flow as client left, the origin connection closes and no fd is left', opts, async (t) => {
  const p = await startProxy(t, { relay: { offloadAfter: OFFLOAD_AFTER } });
  const origin = await rawOrigin(t, (r) => {
    r.socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${64 * MiB}\r\n\r\n`);
    void sendBody(r.socket, 0, 4 * MiB, 1); // then nothing more: the client gives up first
  });
  // the dialer's spare sockets are fds too (egress/dial.ts Spares): the counts leave them out
  const held = () => fdCount() - p.hf.spareSockets();
  const fds = held();
  const before = started();
  const c = await client(p);
  get(c, origin.port, '/file');
  let got = 0;
  await new Promise<void>((resolve) =>
    c.on('data', (d: Buffer) => {
      got += d.length;
      if (got > MiB) resolve();
    }),
  );
  assert.equal(started() - before, 1);
  // /status follows the native relay: the client has read more than a MiB, so the relay wrote it
  const seen = (p.hf.status().flows[0] as { bytesDown: number }).bytesDown;
  assert.ok(seen > MiB && seen <= 4 * MiB, `/status bytesDown follows the relay (${seen})`);
  // the upstream got its keepalive at the handoff (its JS socket closed there; src/keepalive.ts)
  const ka = keepaliveTo(origin.port);
  assert.ok(ka !== undefined && ka > 20 && ka <= 30, `the offloaded upstream's first probe in ${ka} s (dial.keepAlive 30 s)`);
  c.resetAndDestroy();
  const close = await p.logs.waitFor((l) => l.msg === 'flow close');
  assert.equal(close.reason, 'client left');
  await Promise.race([origin.closed[0], new Promise((_, rej) => setTimeout(() => rej(new Error('the origin connection stayed open')), 5000).unref())]);
  await flowsDrained(p.hf);
  await pollUntil(() => (engine!.info().tunnels === 0 ? true : undefined), { timeoutMs: 5000, what: 'the native tunnel to end' });
  await pollUntil(() => (held() <= fds ? true : undefined), { timeoutMs: 5000, what: `fds back to ${fds} besides the spare sockets` });
});
