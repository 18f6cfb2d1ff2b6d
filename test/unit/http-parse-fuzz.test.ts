// Property tests of the HTTP request handling (issue 7), through a real holdfast listener (the
// sniffer, Node's parser as our server configures it, and our handlers): random and mutated
// request heads, with bodies, pipelined, split into random writes, half-closed or not, to an
// open proxy and to one that wants credentials. Whatever arrives: the process does not crash or
// log an unexpected error, the answer (if any) begins with a valid HTTP status line, a client that
// has finished sending is answered or closed within a bound, and afterwards no flow is left and
// the proxy still serves.
//
// Every destination leads to a loopback origin (the resolver sees every target, names and
// address literals alike), so fuzzed requests never leave the machine.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { Spares } from '../../src/egress/dial.js';
import { connectTo, drain, redirectResolver, startHf, type Hf } from '../helpers/hardening.js';
import { run } from '../helpers/proc.js';
import { flowsDrained } from '../helpers/proxy.js';
import { httpServer } from '../helpers/servers.js';

const BATCHES = Number(process.env.HOLDFAST_FUZZ_BATCHES ?? 100);
const BATCH = 40;
const HANDSHAKE_MS = 800;
/** a client that half-closed must see the end within this */
const END_WITHIN_MS = HANDSHAKE_MS + 2000;
/** a client that keeps its side open stops listening after this */
const LISTEN_MS = 400;

const STATUS_LINE = /^HTTP\/1\.[01] ([1-5]\d\d) [^\r\n]*\r\n/;
/** every status holdfast (or Node's parser for it, or the loopback origin) may answer with */
const ALLOWED = new Set([100, 200, 400, 401, 403, 404, 405, 407, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505]);

interface Case {
  head: string;
  body: Uint8Array;
  pipelined: string | null;
  mutations: { kind: 'flip' | 'insert' | 'delete' | 'truncate' | 'dup'; at: number; byte: number; len: number }[];
  splits: number[];
  halfClose: boolean;
  authed: boolean;
}

function caseArb(originPort: number, selfPort: number): fc.Arbitrary<Case> {
  const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
  const anyText = fc.string({ unit: 'binary', maxLength: 40 });
  const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 });
  const method = fc.oneof(
    { weight: 20, arbitrary: fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'CONNECT', 'CONNECT', 'PATCH', 'TRACE') },
    { weight: 1, arbitrary: fc.constantFrom('PRI', 'get', 'CONNECTX', 'G ET', '') },
    { weight: 1, arbitrary: token },
    { weight: 1, arbitrary: anyText },
  );
  const target = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('/status', '/proxy.pac', '/metrics', '/', '/nope?x=1', '*', '//x', '/%zz') },
    {
      weight: 12,
      arbitrary: fc.constantFrom(
        `http://origin.test:${originPort}/x`,
        `http://127.0.0.1:${originPort}/p?q=1`,
        `http://[::1]:${originPort}/`,
        `http://localhost:${selfPort}/status`,
        `http://127.0.0.1:${selfPort}/nope`,
        `origin.test:${originPort}`,
        `127.0.0.1:${originPort}`,
        `[::1]:${originPort}`,
        `localhost:${selfPort}`,
        `127.0.0.1:0`,
        `h:99999`,
        'https://origin.test/',
        'ftp://origin.test/',
        'http://u:p@origin.test/',
        'http://origin.test:/',
        'http://[::1/',
      ),
    },
    { weight: 3, arbitrary: fc.webUrl().map((u) => u.replace(/^https?:\/\/[^/]*/, `http://origin.test:${originPort}`)) },
    { weight: 1, arbitrary: printable },
    { weight: 1, arbitrary: anyText },
  );
  const version = fc.oneof(
    { weight: 30, arbitrary: fc.constantFrom('HTTP/1.1', 'HTTP/1.0') },
    { weight: 1, arbitrary: fc.constantFrom('HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/1.10', 'HTTP/1', '', 'HTTP/1.1 x') },
    { weight: 1, arbitrary: anyText },
  );
  const known = fc.oneof(
    fc.constant(['Host', 'origin.test'] as const),
    fc.tuple(fc.constant('Content-Length'), fc.oneof(fc.nat({ max: 300 }).map(String), fc.constantFrom('-1', '99999999999999999999', ' 5', '5, 5', 'x', ''))),
    fc.tuple(fc.constant('Transfer-Encoding'), fc.constantFrom('chunked', 'gzip, chunked', 'chunked, identity', 'identity', 'x')),
    fc.tuple(fc.constant('Connection'), fc.constantFrom('close', 'keep-alive', 'upgrade', 'x-drop, close')),
    fc.tuple(fc.constant('Upgrade'), fc.constantFrom('websocket', 'h2c')),
    fc.tuple(fc.constant('Expect'), fc.constantFrom('100-continue', 'x')),
    fc.tuple(fc.constantFrom('Proxy-Authorization', 'Authorization'), fc.oneof(fc.constantFrom('Basic dTpw', 'Basic', 'Basic !!', 'Bearer x'), printable)),
    fc.tuple(fc.constant('Proxy-Connection'), fc.constantFrom('keep-alive', 'close')),
  );
  const header = fc.oneof(
    { weight: 12, arbitrary: known },
    { weight: 4, arbitrary: fc.tuple(token, printable) },
    { weight: 1, arbitrary: fc.tuple(token, anyText) },
    { weight: 1, arbitrary: fc.tuple(anyText, anyText) },
  );
  const eol = fc.oneof({ weight: 12, arbitrary: fc.constant('\r\n') }, { weight: 1, arbitrary: fc.constantFrom('\n', '\r', '\r\r\n') });
  const space = fc.oneof({ weight: 12, arbitrary: fc.constant(' ') }, { weight: 1, arbitrary: fc.constantFrom('  ', '\t', '') });
  // most requests name their Host (HTTP/1.1 requires it: Node answers 400 without)
  const host = fc.oneof({ weight: 4, arbitrary: fc.constant([['Host', 'origin.test']] as [string, string][]) }, { weight: 1, arbitrary: fc.constant([] as [string, string][]) });
  const head = fc
    .tuple(method, target, version, host, fc.array(header, { maxLength: 10 }), eol, space)
    .map(([m, tg, v, h, hs, nl, sp]) => `${m}${sp}${tg}${sp}${v}${nl}${[...h, ...hs].map(([k, val]) => `${k}: ${val}${nl}`).join('')}${nl}`);
  const chunked = fc
    .array(fc.uint8Array({ maxLength: 40 }), { maxLength: 4 })
    .map((cs) => Buffer.from(cs.map((c) => `${c.length.toString(16)}\r\n${Buffer.from(c).toString('latin1')}\r\n`).join('') + '0\r\n\r\n', 'latin1'));
  const fraction = fc.integer({ min: 0, max: 1000 }).map((x) => x / 1000);
  const mutation = fc.record({
    kind: fc.constantFrom('flip', 'insert', 'delete', 'truncate', 'dup'),
    at: fraction,
    byte: fc.integer({ min: 0, max: 255 }),
    len: fc.integer({ min: 1, max: 24 }),
  });
  const dirty = fc.record({ head, body: fc.oneof(fc.uint8Array({ maxLength: 200 }), chunked) });
  // well-formed requests, so the handlers behind the parser get their share
  const safeValue = fc.stringMatching(/^[A-Za-z0-9 ._~:/?=-]{0,30}$/);
  const clean = fc
    .tuple(
      fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'CONNECT', 'CONNECT'),
      fc.constantFrom(
        `http://origin.test:${originPort}/x`,
        `http://127.0.0.1:${originPort}/p?q=1`,
        `http://[::1]:${originPort}/`,
        `http://localhost:${selfPort}/status`,
        `http://origin.test:${selfPort}/status`,
        '/status',
        '/proxy.pac',
        '/nope',
      ),
      fc.constantFrom(`origin.test:${originPort}`, `127.0.0.1:${originPort}`, `[::1]:${originPort}`, `localhost:${selfPort}`, 'origin.test:1'),
      fc.constantFrom('HTTP/1.1', 'HTTP/1.0'),
      fc.option(fc.constantFrom('Basic dTpw', 'Basic dTp4', 'Basic'), { freq: 2 }),
      fc.array(fc.tuple(fc.constantFrom('X-A', 'Accept', 'User-Agent', 'Cookie', 'Connection', 'Via'), safeValue), { maxLength: 4 }),
      fc.oneof(fc.constant(new Uint8Array()), fc.uint8Array({ maxLength: 300 })),
      fc.boolean(),
      // holdfast's own pages answer only requests addressed to it (DNS rebinding)
      fc.constantFrom('origin.test', `127.0.0.1:${selfPort}`, `localhost:${selfPort}`),
    )
    .map(([m, url, authority, v, proxyAuth, hs, body, chunk, hostHeader]) => {
      const lines = [`${m} ${m === 'CONNECT' ? authority : url} ${v}`, `Host: ${m === 'CONNECT' ? authority : hostHeader}`];
      if (proxyAuth) lines.push(`Proxy-Authorization: ${proxyAuth}`);
      for (const [k, val] of hs) lines.push(`${k}: ${val}`);
      let payload: Uint8Array = body;
      if (m !== 'CONNECT' && body.length) {
        if (chunk && v === 'HTTP/1.1') {
          lines.push('Transfer-Encoding: chunked');
          payload = Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
        } else lines.push(`Content-Length: ${body.length}`);
      }
      return { head: `${lines.join('\r\n')}\r\n\r\n`, body: payload };
    });
  return fc.record({
    req: fc.oneof({ weight: 2, arbitrary: clean }, { weight: 3, arbitrary: dirty }),
    pipelined: fc.option(head, { freq: 4 }),
    mutations: fc.oneof({ weight: 2, arbitrary: fc.constant<Case['mutations']>([]) }, { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
    splits: fc.array(fraction, { maxLength: 4 }),
    halfClose: fc.boolean(),
    authed: fc.boolean(),
  }).map(({ req, ...rest }) => ({ ...req, ...rest }));
}

function bytesOf(c: Case): Buffer {
  let b = Buffer.concat([Buffer.from(c.head, 'latin1'), c.body, Buffer.from(c.pipelined ?? '', 'latin1')]);
  for (const m of c.mutations) {
    const at = Math.floor(m.at * b.length);
    if (m.kind === 'flip' && b.length) {
      b = Buffer.from(b);
      b[Math.min(at, b.length - 1)] ^= m.byte || 1;
    } else if (m.kind === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.alloc(m.len, m.byte), b.subarray(at)]);
    else if (m.kind === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
    else if (m.kind === 'truncate') b = b.subarray(0, at);
    else b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at)]);
  }
  return b;
}

interface Outcome {
  ok: boolean;
  why: string;
  /** the status answered first, 'close' (closed without a byte) or 'open' (still open, silent) */
  seen: string;
}

async function runCase(p: Hf, c: Case): Promise<Outcome> {
  const bytes = bytesOf(c);
  const s = await connectTo(p.port);
  const out = drain(s, c.halfClose ? END_WITHIN_MS : LISTEN_MS);
  const cuts = [...new Set(c.splits.map((x) => Math.floor(x * bytes.length)))].sort((a, b) => a - b);
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    if (s.destroyed || !s.writable) break;
    if (to > from) s.write(bytes.subarray(from, to));
    from = to;
    await new Promise((r) => setImmediate(r));
  }
  if (c.halfClose && !s.destroyed && s.writable) s.end();
  const r = await out;
  s.destroy();
  const text = r.bytes.toString('latin1');
  const seen = r.bytes.length ? (STATUS_LINE.exec(text)?.[1] ?? 'garbage') : r.how === 'timeout' ? 'open' : 'close';
  if (bytes[0] === 0x05) {
    // the first byte makes it SOCKS5: a SOCKS answer (or a close) is right
    if (r.bytes.length > 0 && r.bytes[0] !== 0x05) return { ok: false, why: `SOCKS5 first byte, answer ${r.bytes.toString('hex')}`, seen: 'socks' };
    return c.halfClose && r.how === 'timeout' ? { ok: false, why: 'SOCKS5 client finished, still open', seen: 'socks' } : { ok: true, why: '', seen: 'socks' };
  }
  if (r.bytes.length > 0) {
    const m = STATUS_LINE.exec(text);
    if (!m) return { ok: false, why: `not an HTTP status line: ${JSON.stringify(text.slice(0, 80))}`, seen };
    if (!ALLOWED.has(Number(m[1]))) return { ok: false, why: `unexpected status ${m[1]}`, seen };
  }
  if (c.halfClose && r.how === 'timeout') {
    return { ok: false, why: `still open ${END_WITHIN_MS} ms after the client finished; got ${JSON.stringify(text.slice(0, 80))}`, seen };
  }
  return { ok: true, why: '', seen };
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function fdTargets(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      /* closed meanwhile */
    }
  }
  return out.sort();
}

test(`HTTP request fuzz through a live listener: ${BATCHES} x ${BATCH} random and mutated heads`, { timeout: 600_000 }, async (t) => {
  const origin = await httpServer(t, (_req, res, body) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) });
    res.end(body);
  });
  const common = { limits: { handshakeTimeout: HANDSHAKE_MS, maxHeaderBytes: 4096 }, dial: { timeout: 1000 } };
  const resolver = redirectResolver('127.0.0.1', origin.port);
  const open = await startHf(t, common, { resolver, level: 'info' });
  const authed = await startHf(t, { ...common, auth: { users: [{ username: 'u', password: 'p' }] } }, { resolver, level: 'info' });
  // warm up (lazily made handles count in the baseline)
  await runCase(open, { head: `GET http://origin.test:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`, body: new Uint8Array(), pipelined: null, mutations: [], splits: [], halfClose: true, authed: false });
  await flowsDrained(open.hf);
  // the dialers' spare sockets are fds too, made and closed as dials come (egress/dial.ts
  // Spares): every count below leaves them out
  const spares = () => open.hf.spareSockets() + authed.hf.spareSockets();
  const held = () => openFds() - spares();
  const baseline = held();
  const baselineTargets = fdTargets();

  let cases = 0;
  const started = Date.now();
  const outcomes = new Map<string, number>();
  let failure: string | undefined;
  const property = fc.assert(
    fc.asyncProperty(fc.array(caseArb(origin.port, open.port), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
      const results = await Promise.all(batch.map((c) => runCase(c.authed ? authed : open, c)));
      cases += batch.length;
      for (const r of results) outcomes.set(r.seen, (outcomes.get(r.seen) ?? 0) + 1);
      if (process.env.HOLDFAST_FUZZ_SHOW) {
        results.forEach((r, i) => {
          if (r.seen === process.env.HOLDFAST_FUZZ_SHOW && Math.random() < 0.01) t.diagnostic(`${r.seen}: ${JSON.stringify(bytesOf(batch[i]).toString('latin1').slice(0, 200))}`);
        });
      }
      const bad = results.findIndex((r) => !r.ok);
      if (bad >= 0) {
        failure ??= `${results[bad].why}\n  case: ${JSON.stringify(bytesOf(batch[bad]).toString('latin1'))} halfClose=${batch[bad].halfClose} authed=${batch[bad].authed}`;
        throw new Error(failure);
      }
    }),
    { numRuns: BATCHES, endOnFailure: true },
  );
  await property.catch((err: Error) => {
    throw new Error(`${failure ?? 'fuzz case failed'}\n${err.message.split('\n').slice(0, 2).join(' ')}`);
  });
  t.diagnostic(`${cases} cases in ${Date.now() - started} ms; first answers: ${[...outcomes].sort((x, y) => y[1] - x[1]).map(([k, n]) => `${k} x${n}`).join(', ')}`);

  // afterwards: nothing unexpected was logged, no flow is left, both still serve, no fd leaked
  for (const p of [open, authed]) {
    const errors = p.logs.lines.filter((l) => l.level >= 50);
    assert.deepEqual(errors.map((l) => `${l.msg}: ${JSON.stringify(l.err ?? l)}`), [], 'no error-level log line');
    await flowsDrained(p.hf, 10_000);
    const r = await runCase(p, { head: 'GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', body: new Uint8Array(), pipelined: null, mutations: [], splits: [], halfClose: true, authed: false });
    assert.equal(r.seen, '200', 'still serves /status');
  }
  const deadline = Date.now() + 10_000;
  while (held() > baseline + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (held() > baseline + 2) {
    const before = new Set(baselineTargets);
    t.diagnostic(`new fds: ${fdTargets().filter((x) => !before.has(x)).join(', ')}`);
    if (process.env.HOLDFAST_FUZZ_FDS) {
      for (const fd of readdirSync('/proc/self/fd')) {
        let target = '';
        try {
          target = readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          continue;
        }
        if (before.has(target) || !target.startsWith('socket:')) continue;
        const { Socket } = await import('node:net');
        const probe = new Socket({ fd: Number(fd), readable: false, writable: false });
        t.diagnostic(`fd ${fd} ${target}: local ${JSON.stringify(probe.address())} remote ${probe.remoteAddress}:${probe.remotePort}`);
      }
    }
    const ss = await run('ss', ['-tanoe', 'state', 'established'], { allowFail: true });
    t.diagnostic(`established: ${ss.stdout.split('\n').length - 2}; ports: origin ${origin.port}, open ${open.port}, authed ${authed.port}`);
  }
  assert.ok(held() <= baseline + 2, `open fds ${openFds()} (${spares()} spare sockets) vs baseline ${baseline}`);
  assert.ok(spares() <= 2 * 2 * Spares.maxDepth, `spare sockets ${spares()}: at most maxDepth per egress (lo, IPv4 and IPv6) and proxy`);
});

test('7: a pipelined forward whose client leaves before its turn still ends its flow', async (t) => {
  const origin = await httpServer(t, (req, res) => {
    // the first request is slow, so the second's response waits in Node's queue
    setTimeout(() => res.end('done'), req.url === '/slow' ? 300 : 0);
  });
  const p = await startHf(t, {}, { resolver: redirectResolver('127.0.0.1', origin.port), level: 'info' });
  for (let i = 0; i < 5; i++) {
    const s = await connectTo(p.port);
    s.write(
      `GET http://origin.test:${origin.port}/slow HTTP/1.1\r\nHost: origin.test\r\n\r\n` +
        `GET http://origin.test:${origin.port}/fast HTTP/1.1\r\nHost: origin.test\r\n\r\n`,
    );
    await new Promise((r) => setTimeout(r, 100));
    s.destroy();
  }
  await flowsDrained(p.hf, 3000);
  const reasons = p.logs.byMsg('flow close').map((l) => l.reason);
  assert.equal(reasons.length, 10, `every forward ended: ${JSON.stringify(reasons)}`);
});

test('7: refused CONNECTs (407, 400, 403) leave no connection behind once their clients are gone', async (t) => {
  const p = await startHf(t, { auth: { users: [{ username: 'u', password: 'p' }] } }, { level: 'info' });
  const basic = `Basic ${Buffer.from('u:p').toString('base64')}`;
  const heads = [
    'CONNECT origin.test:1 HTTP/1.1\r\nHost: x\r\n\r\n',
    `CONNECT no-port HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic}\r\n\r\n`,
    `CONNECT 127.0.0.1:${p.port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic}\r\n\r\n`,
  ];
  for (let i = 0; i < 30; i++) {
    const s = await connectTo(p.port);
    const answered = once(s, 'data');
    s.write(heads[i % 3]);
    assert.match(String((await answered)[0]), /^HTTP\/1\.1 (407|400|403) /);
    // what the fuzz found: bytes the client sends after the head (nobody reads them), then it goes
    s.end('bytes nobody reads');
    await new Promise((r) => setTimeout(r, 5));
    s.destroy();
  }
  const server = p.hf.listeners[0].server;
  const count = () => new Promise<number>((r) => server.getConnections((_e, n) => r(n)));
  const deadline = Date.now() + 3000;
  while ((await count()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await count(), 0, 'holdfast closed every refused connection');
});
