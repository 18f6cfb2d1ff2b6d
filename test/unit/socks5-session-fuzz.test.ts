// Property tests of the SOCKS5 session (issue 7), through a real holdfast listener: a valid
// handshake (with or without a login) split into any writes gives exactly the answers of the
// whole, and the tunnel carries the payload; mutated and truncated handshakes get a well-formed
// SOCKS answer or a clean close, within a bound once the client has finished. Afterwards no flow
// and no connection is left. Every destination leads to a loopback echo server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { connectTo, drain, redirectResolver, startHf, type Hf, userPassBytes } from '../helpers/hardening.js';
import { flowsDrained } from '../helpers/proxy.js';
import { echoServer } from '../helpers/servers.js';

const HANDSHAKE_MS = 800;
const END_WITHIN_MS = HANDSHAKE_MS + 2000;
const RUNS = Number(process.env.HOLDFAST_FUZZ_BATCHES ?? 60);
const BATCH = 40;

interface Handshake {
  greeting: Buffer;
  login: Buffer | null;
  request: Buffer;
  payload: Buffer;
}

const addrArb = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 255 })).map(([a, b]) => Buffer.from([0x01, 10, a, b, 1])),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.concat([Buffer.from([0x04]), b])),
  fc.stringMatching(/^[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){0,3}$/).map((n) => Buffer.concat([Buffer.from([0x03, n.length]), Buffer.from(n)])),
);

function handshakeArb(auth: boolean): fc.Arbitrary<Handshake> {
  return fc
    .tuple(
      fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { minLength: 0, maxLength: 6 }),
      addrArb,
      fc.integer({ min: 1, max: 65535 }),
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
    )
    .map(([extra, addr, port, payload]) => {
      const methods = [...new Set([auth ? 0x02 : 0x00, ...extra])];
      const p = Buffer.alloc(2);
      p.writeUInt16BE(port);
      return {
        greeting: Buffer.from([0x05, methods.length, ...methods]),
        login: auth ? userPassBytes('user', 'pass word') : null,
        request: Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), addr, p]),
        payload: Buffer.from(payload),
      };
    });
}

/**
 * Issue 11: requests a client may send to hurt: CONNECT, BIND or UDP ASSOCIATE to 0.0.0.0, ::,
 * "0" or "0.0.0.0" by name, at port 0, 1 or holdfast's own port, nested several times in one
 * write. Each gets a well-formed answer or a clean close, and nothing logs an error.
 */
function hostileArb(auth: boolean, selfPort: number): fc.Arbitrary<Buffer> {
  const name = (n: string) => Buffer.concat([Buffer.from([0x03, n.length]), Buffer.from(n)]);
  return fc
    .tuple(
      fc.constantFrom(0x01, 0x02, 0x03),
      fc.constantFrom(Buffer.from([0x01, 0, 0, 0, 0]), Buffer.concat([Buffer.from([0x04]), Buffer.alloc(16)]), name('0'), name('0.0.0.0')),
      fc.constantFrom(0, 1, selfPort),
      fc.integer({ min: 1, max: 8 }),
    )
    .map(([cmd, addr, port, n]) => {
      const p = Buffer.alloc(2);
      p.writeUInt16BE(port);
      const request = Buffer.concat([Buffer.from([0x05, cmd, 0x00]), addr, p]);
      const greeting = Buffer.from([0x05, 0x01, auth ? 0x02 : 0x00]);
      const login = auth ? userPassBytes('user', 'pass word') : Buffer.alloc(0);
      const nested = Buffer.concat([greeting, request]);
      return Buffer.concat([greeting, login, request, ...Array.from({ length: n - 1 }, () => nested)]);
    });
}

function whole(h: Handshake): Buffer {
  return Buffer.concat([h.greeting, h.login ?? Buffer.alloc(0), h.request, h.payload]);
}

/** Write `bytes` cut at `cuts` (fractions), a turn apart; then end; everything the proxy sent. */
async function exchange(p: Hf, bytes: Buffer, cuts: number[], halfClose: boolean, listenMs: number) {
  const s = await connectTo(p.port);
  const out = drain(s, halfClose ? END_WITHIN_MS : listenMs);
  let from = 0;
  for (const to of [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b).concat(bytes.length)) {
    if (s.destroyed || !s.writable) break;
    if (to > from) s.write(bytes.subarray(from, to));
    from = to;
    await new Promise((r) => setImmediate(r));
  }
  if (halfClose && !s.destroyed && s.writable) s.end();
  const r = await out;
  s.destroy();
  return r;
}

/** Is `b` a well-formed sequence of SOCKS5 answers (possibly cut short), then tunnel bytes? */
function wellFormed(b: Buffer, auth: boolean): string | undefined {
  if (b.length === 0) return undefined;
  if (b[0] !== 0x05) return `method answer starts ${b[0]}`;
  if (b.length < 2) return undefined;
  const method = b[1];
  if (method === 0xff) return b.length === 2 ? undefined : 'bytes after 05 FF';
  if (method !== (auth ? 0x02 : 0x00)) return `method ${method}`;
  let at = 2;
  if (auth) {
    if (b.length <= at) return undefined;
    if (b[at] !== 0x01) return `login status version ${b[at]}`;
    if (b.length <= at + 1) return undefined;
    if (b[at + 1] === 0x01) return b.length === at + 2 ? undefined : 'bytes after a failed login';
    if (b[at + 1] !== 0x00) return `login status ${b[at + 1]}`;
    at += 2;
  }
  if (b.length <= at) return undefined;
  if (b[at] !== 0x05) return `reply version ${b[at]}`;
  const rep = b[at + 1];
  if (rep !== undefined && rep > 0x08) return `reply code ${rep}`;
  if (rep !== undefined && rep !== 0x00 && b.length > at + 10) return 'bytes after a failure reply';
  return undefined;
}

test('SOCKS5 session: a valid handshake split into any writes gives the answers of the whole, and tunnels', { timeout: 300_000 }, async (t) => {
  const echo = await echoServer(t);
  const resolver = redirectResolver('127.0.0.1', echo.port);
  const common = { limits: { handshakeTimeout: HANDSHAKE_MS } };
  const open = await startHf(t, common, { resolver, level: 'info' });
  const authed = await startHf(t, { ...common, auth: { users: [{ username: 'user', password: 'pass word' }] } }, { resolver, level: 'info' });
  let cases = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.boolean().chain((auth) => fc.tuple(fc.constant(auth), handshakeArb(auth), fc.array(fc.integer({ min: 0, max: 1000 }).map((x) => x / 1000), { maxLength: 6 }))),
        { minLength: BATCH, maxLength: BATCH },
      ),
      async (batch) => {
        await Promise.all(
          batch.map(async ([auth, h, cuts]) => {
            const r = await exchange(auth ? authed : open, whole(h), cuts, true, 0);
            cases++;
            const head = auth ? [0x05, 0x02, 0x01, 0x00] : [0x05, 0x00];
            assert.deepEqual([...r.bytes.subarray(0, head.length)], head, 'method (and login) answers');
            assert.equal(r.bytes[head.length + 1], 0x00, `CONNECT succeeded: ${r.bytes.toString('hex')}`);
            assert.equal(r.bytes[head.length + 3], 0x01, 'bound address is IPv4 (the echo server)');
            assert.ok(r.bytes.subarray(head.length + 10).equals(h.payload), 'the payload came back through the tunnel, whole and in order');
          }),
        );
      },
    ),
    { numRuns: Math.ceil(RUNS / 2) },
  );
  t.diagnostic(`${cases} split handshakes`);
  await flowsDrained(open.hf);
  await flowsDrained(authed.hf);
});

test('SOCKS5 session: mutated, truncated and random handshakes get well-formed answers or a clean close; nothing is left', { timeout: 300_000 }, async (t) => {
  const echo = await echoServer(t);
  const resolver = redirectResolver('127.0.0.1', echo.port);
  const common = { limits: { handshakeTimeout: HANDSHAKE_MS }, dial: { timeout: 500 } };
  const open = await startHf(t, common, { resolver, level: 'info' });
  const authed = await startHf(t, { ...common, auth: { users: [{ username: 'user', password: 'pass word' }] } }, { resolver, level: 'info' });
  const mutation = fc.record({
    kind: fc.constantFrom('flip', 'set', 'truncate', 'insert', 'delete'),
    at: fc.integer({ min: 0, max: 1000 }).map((x) => x / 1000),
    byte: fc.integer({ min: 0, max: 255 }),
  });
  const caseArb = fc.boolean().chain((auth) =>
    fc.record({
      auth: fc.constant(auth),
      bytes: fc.oneof(
        { weight: 4, arbitrary: fc.tuple(handshakeArb(auth), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([h, ms]) => mutate(whole(h), ms)) },
        { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.concat([Buffer.from([0x05]), b])) },
        { weight: 1, arbitrary: hostileArb(auth, auth ? authed.port : open.port) },
      ),
      cuts: fc.array(fc.integer({ min: 0, max: 1000 }).map((x) => x / 1000), { maxLength: 4 }),
      halfClose: fc.boolean(),
    }),
  );
  let cases = 0;
  const seen = new Map<string, number>();
  let failure: string | undefined;
  await fc
    .assert(
      fc.asyncProperty(fc.array(caseArb, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        await Promise.all(
          batch.map(async (c) => {
            const r = await exchange(c.auth ? authed : open, c.bytes, c.cuts, c.halfClose, 300);
            cases++;
            const why = wellFormed(r.bytes, c.auth) ?? (c.halfClose && r.how === 'timeout' ? `still open ${END_WITHIN_MS} ms after the client finished` : undefined);
            const k = r.bytes.length === 0 ? (r.how === 'timeout' ? 'silent' : 'closed') : r.bytes.subarray(0, 2).toString('hex');
            seen.set(k, (seen.get(k) ?? 0) + 1);
            if (why) {
              failure ??= `${why}: sent ${c.bytes.toString('hex')} (auth ${c.auth}, halfClose ${c.halfClose}), got ${r.bytes.toString('hex')}`;
              throw new Error(failure);
            }
          }),
        );
      }),
      { numRuns: RUNS, endOnFailure: true },
    )
    .catch((err: Error) => {
      throw new Error(`${failure ?? ''}\n${err.message.split('\n').slice(0, 2).join(' ')}`);
    });
  t.diagnostic(`${cases} mutated handshakes; first answer bytes: ${[...seen].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} x${n}`).join(', ')}`);
  for (const p of [open, authed]) {
    await flowsDrained(p.hf, 10_000);
    assert.deepEqual(p.logs.lines.filter((l) => l.level >= 50).map((l) => l.msg), [], 'no error-level log line');
    const server = p.hf.listeners[0].server;
    const count = () => new Promise<number>((r) => server.getConnections((_e, n) => r(n)));
    const deadline = Date.now() + END_WITHIN_MS + 2000;
    while ((await count()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await count(), 0, 'every connection closed');
  }
});

function mutate(b: Buffer, ms: { kind: string; at: number; byte: number }[]): Buffer {
  let out = Buffer.from(b);
  for (const m of ms) {
    const at = Math.min(Math.floor(m.at * out.length), Math.max(0, out.length - 1));
    if (m.kind === 'flip' && out.length) out[at] ^= 1 << (m.byte % 8);
    else if (m.kind === 'set' && out.length) out[at] = m.byte;
    else if (m.kind === 'truncate') out = out.subarray(0, at);
    else if (m.kind === 'insert') out = Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at)]);
    else out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
  }
  // the first byte stays 0x05, or the listener hands it to HTTP (covered by http-parse-fuzz)
  if (out.length) out[0] = 0x05;
  return out;
}
