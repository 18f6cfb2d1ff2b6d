// The SOCKS5 codec over TCP: greeting, RFC 1929 username/password, request, method and reply.
// Examples first, then fast-check: any split parses like the whole, random bytes never throw,
// and encode -> parse round-trips. ~14k fast-check runs in all.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { Reply } from '../../src/errors.js';
import {
  Atyp,
  Command,
  Method,
  Version,
  encodeMethod,
  encodeReply,
  encodeUdpHeader,
  encodeUserPassStatus,
  parseGreeting,
  parseRequest,
  parseUdpHeader,
  parseUserPass,
  type Parsed,
  type SocksAddress,
} from '../../src/inbound/socks5.js';

// ---------------------------------------------------------------------------------------------
// Helpers

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const bytes = (...xs: number[]): Buffer => Buffer.from(xs);
const ascii = (s: string): Buffer => Buffer.from(s, 'latin1');
const cat = (...bs: Uint8Array[]): Buffer => Buffer.concat(bs);

/** A client's request, built with the codec's own address encoder (`05 CMD 00` + ATYP ADDR PORT). */
function request(cmd: number, address: SocksAddress | { ip: string }, port: number): Buffer {
  return cat(bytes(Version, cmd, 0x00), encodeUdpHeader(address, port).subarray(3));
}

/** A userpass message from raw field bytes. */
function userPass(user: Uint8Array, pass: Uint8Array, ver = 0x01): Buffer {
  return cat(bytes(ver, user.length), user, bytes(pass.length), pass);
}

type Parser<T> = (buf: Uint8Array) => Parsed<T>;

function assertNeed<T>(r: Parsed<T>, want?: number): number {
  assert.equal(r.ok, false, `expected need, got ${JSON.stringify(r)}`);
  assert.ok('need' in r, `expected need, got ${JSON.stringify(r)}`);
  assert.ok(Number.isInteger(r.need) && r.need >= 1, `need must be >= 1: ${r.need}`);
  if (want !== undefined) assert.equal(r.need, want);
  return r.need;
}

function assertReply<T>(r: Parsed<T>, reply: number, why?: string): void {
  assert.ok(!r.ok && 'reply' in r, `expected reply 0x${reply.toString(16)}, got ${JSON.stringify(r)}`);
  assert.equal(r.reply, reply);
  if (why !== undefined) assert.equal(r.why, why);
}

function assertOk<T>(r: Parsed<T>, value: T, used: number): void {
  assert.ok(r.ok, `expected ok, got ${JSON.stringify(r)}`);
  assert.deepEqual(r.value, value);
  assert.equal(r.used, used);
}

/** Every proper prefix of a valid message asks for more, and never for more than is missing. */
function assertNeedAtEveryPrefix<T>(parse: Parser<T>, msg: Buffer): void {
  for (let k = 0; k < msg.length; k++) {
    const n = assertNeed(parse(msg.subarray(0, k)));
    assert.ok(n <= msg.length - k, `prefix ${k}/${msg.length}: need ${n} exceeds what is missing`);
  }
}

/** The canonical text Node gives an IPv6 address (for expected values). */
const nodeIPv6 = (ip: string): string => new net.SocketAddress({ address: ip.replace(/%.*$/, ''), family: 'ipv6' }).address;

// ---------------------------------------------------------------------------------------------
// Arbitraries

const arbIPv4 = fc.ipV4().map((ip): SocksAddress => ({ kind: 'ipv4', ip }));
/** Eight groups biased to zeros and 0xffff so compression and v4-mapped forms show up often. */
const arbWords = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), {
  minLength: 8,
  maxLength: 8,
});
const arbIPv6 = fc.oneof(
  arbWords.map((ws) => ws.map((w) => w.toString(16)).join(':')),
  fc.ipV6(),
).map((text): SocksAddress => ({ kind: 'ipv6', ip: nodeIPv6(text) }));
const noControls = (s: string): boolean => !/[\u0000-\u001f\u007f-\u009f]|\p{Cs}/u.test(s);
const arbDomain = fc
  .oneof(fc.domain(), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 255 }))
  .filter((name) => noControls(name) && Buffer.byteLength(name) >= 1 && Buffer.byteLength(name) <= 255)
  .map((name): SocksAddress => ({ kind: 'domain', name }));
const arbAddress = fc.oneof(arbIPv4, arbIPv6, arbDomain);
const arbPort = fc.integer({ min: 0, max: 0xffff });
const arbCommand = fc.constantFrom(Command.CONNECT, Command.BIND, Command.UDP_ASSOCIATE);
const arbField = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => !/\p{Cs}/u.test(s) && Buffer.byteLength(s) <= 255),
  fc.string({ unit: 'grapheme-ascii', maxLength: 255 }),
);

/** Cut `msg` into chunks at arbitrary points. */
const arbSplit = (msg: Buffer) =>
  fc.array(fc.integer({ min: 0, max: msg.length }), { maxLength: 8 }).map((cuts) => {
    const points = [...new Set([0, ...cuts, msg.length])].sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    for (let i = 1; i < points.length; i++) chunks.push(msg.subarray(points[i - 1], points[i]));
    return chunks;
  });

/**
 * Feed chunks as a session would: append, re-parse; until the last chunk every parse must ask
 * for more, within what is missing; the last gives the same value as parsing the whole at once,
 * and trailing bytes in the same read are left alone.
 */
function checkIncremental<T>(parse: Parser<T>, msg: Buffer, chunks: Buffer[], trailer: Buffer): void {
  const whole = parse(msg);
  assert.ok(whole.ok, `whole message must parse: ${JSON.stringify(whole)}`);
  let acc: Buffer = Buffer.alloc(0);
  for (let i = 0; i < chunks.length; i++) {
    acc = cat(acc, chunks[i]);
    if (i < chunks.length - 1) {
      const n = assertNeed(parse(acc));
      assert.ok(n <= msg.length - acc.length);
    }
  }
  acc = cat(acc, trailer);
  const r = parse(acc);
  assert.ok(r.ok, `incremental parse failed: ${JSON.stringify(r)}`);
  assert.deepEqual(r.value, whole.value);
  assert.equal(r.used, msg.length);
}

/** Random bytes: a parse, a need or a reply from `replies`; never a throw. */
function checkTotal<T>(parse: Parser<T>, buf: Uint8Array, replies: readonly number[]): void {
  const r = parse(buf);
  if (r.ok) {
    assert.ok(Number.isInteger(r.used) && r.used >= 1 && r.used <= buf.length);
    // The value depends on the first `used` bytes only.
    assert.deepEqual(parse(buf.subarray(0, r.used)), r);
  } else if ('need' in r) {
    assert.ok(Number.isInteger(r.need) && r.need >= 1);
  } else {
    assert.ok(replies.includes(r.reply), `unexpected reply ${r.reply}`);
    assert.equal(typeof r.why, 'string');
  }
}

/** Random tails after a plausible head reach deeper parser states than pure noise. */
const arbNoise = (...heads: number[][]) =>
  fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.tuple(fc.constantFrom(...heads), fc.uint8Array({ maxLength: 300 })).map(([h, t]) => cat(Buffer.from(h), t)),
  );

// ---------------------------------------------------------------------------------------------
// Wire values

test('wire values match RFC 1928', () => {
  assert.equal(Version, 5);
  assert.deepEqual(Method, { NO_AUTH: 0, GSSAPI: 1, USER_PASS: 2, NO_ACCEPTABLE: 0xff });
  assert.deepEqual(Command, { CONNECT: 1, BIND: 2, UDP_ASSOCIATE: 3 });
  assert.deepEqual(Atyp, { IPV4: 1, DOMAIN: 3, IPV6: 4 });
});

// ---------------------------------------------------------------------------------------------
// Greeting and method selection

test('greeting with one or several methods parses', () => {
  assertOk(parseGreeting(hex('05 01 00')), { methods: [0] }, 3);
  assertOk(parseGreeting(hex('05 03 00 01 02')), { methods: [0, 1, 2] }, 5);
  assertOk(parseGreeting(hex('05 02 02 02')), { methods: [2, 2] }, 4); // duplicates kept as sent
});

test('greeting with 255 methods (the maximum) parses', () => {
  const methods = Array.from({ length: 255 }, (_, i) => i);
  assertOk(parseGreeting(cat(bytes(5, 255), Buffer.from(methods))), { methods }, 257);
});

test('greeting leaves pipelined bytes alone', () => {
  const greeting = hex('05 02 00 02');
  const next = request(Command.CONNECT, { ip: '10.0.0.1' }, 80);
  assertOk(parseGreeting(cat(greeting, next)), { methods: [0, 2] }, greeting.length);
});

test('truncated greeting asks for the rest at every length', () => {
  assertNeed(parseGreeting(new Uint8Array(0)), 2);
  assertNeed(parseGreeting(hex('05')), 1);
  assertNeed(parseGreeting(hex('05 03')), 3);
  assertNeed(parseGreeting(hex('05 03 00')), 2);
  assertNeedAtEveryPrefix(parseGreeting, hex('05 03 00 01 02'));
  assertNeedAtEveryPrefix(parseGreeting, cat(bytes(5, 255), Buffer.alloc(255)));
});

test('greeting with a wrong version is refused at its first byte', () => {
  assertReply(parseGreeting(hex('04')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseGreeting(hex('04 01 00 50 7f 00 00 01 00')), Reply.GENERAL_FAILURE, 'version'); // SOCKS4
  assertReply(parseGreeting(ascii('GET / HTTP/1.1\r\n\r\n')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseGreeting(ascii('CONNECT example.com:443 HTTP/1.1\r\n')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseGreeting(hex('00 00')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseGreeting(hex('ff ff ff')), Reply.GENERAL_FAILURE, 'version');
});

test('greeting offering no methods is refused', () => {
  assertReply(parseGreeting(hex('05 00')), Reply.GENERAL_FAILURE, 'no methods');
  assertReply(parseGreeting(hex('05 00 05 01 00')), Reply.GENERAL_FAILURE, 'no methods');
});

test('method selection encodes every method', () => {
  for (const m of Object.values(Method)) assert.deepEqual(encodeMethod(m), bytes(5, m));
  assert.deepEqual(encodeMethod(0x80), hex('05 80'));
  for (const bad of [-1, 256, 1.5, Number.NaN]) assert.throws(() => encodeMethod(bad), RangeError);
});

// ---------------------------------------------------------------------------------------------
// RFC 1929 username/password

test('RFC 1929: username and password parse', () => {
  const msg = userPass(ascii('alice'), ascii('s3cret!'));
  assertOk(parseUserPass(msg), { username: 'alice', password: 's3cret!' }, msg.length);
});

test('RFC 1929: UTF-8 username and password parse', () => {
  const msg = userPass(Buffer.from('jürgen'), Buffer.from('пароль🔑'));
  assertOk(parseUserPass(msg), { username: 'jürgen', password: 'пароль🔑' }, msg.length);
});

test('RFC 1929: empty password and empty username are accepted on the wire', () => {
  // curl sends PLEN 0 for socks5://user@host; the authenticator, not the codec, decides.
  assertOk(parseUserPass(hex('01 04 75736572 00')), { username: 'user', password: '' }, 7);
  assertOk(parseUserPass(hex('01 00 00')), { username: '', password: '' }, 3);
});

test('RFC 1929: 255-byte username and password parse', () => {
  const u = 'u'.repeat(255);
  const p = 'p'.repeat(255);
  assertOk(parseUserPass(userPass(ascii(u), ascii(p))), { username: u, password: p }, 513);
});

test('RFC 1929: bytes after the message are left alone', () => {
  const msg = userPass(ascii('bob'), ascii('pw'));
  const next = request(Command.CONNECT, { kind: 'domain', name: 'example.com' }, 443);
  assertOk(parseUserPass(cat(msg, next)), { username: 'bob', password: 'pw' }, msg.length);
});

test('RFC 1929: truncated message asks for the rest at every length', () => {
  assertNeed(parseUserPass(new Uint8Array(0)), 2);
  assertNeed(parseUserPass(hex('01')), 1);
  assertNeed(parseUserPass(hex('01 03')), 4); // UNAME(3) + PLEN
  assertNeed(parseUserPass(hex('01 03 616263')), 1); // PLEN
  assertNeed(parseUserPass(hex('01 03 616263 02')), 2);
  assertNeedAtEveryPrefix(parseUserPass, userPass(ascii('alice'), ascii('secret')));
  assertNeedAtEveryPrefix(parseUserPass, userPass(Buffer.from('ü'), new Uint8Array(0)));
});

test('RFC 1929: wrong sub-negotiation version is refused', () => {
  // A client that skipped sub-negotiation and sent its request straight away.
  assertReply(parseUserPass(request(Command.CONNECT, { ip: '1.2.3.4' }, 80)), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseUserPass(userPass(ascii('a'), ascii('b'), 0x02)), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseUserPass(hex('00')), Reply.GENERAL_FAILURE, 'version');
});

test('RFC 1929: invalid UTF-8 is refused, not replaced', () => {
  // Lossy decoding would let two different passwords meet as one string.
  for (const bad of [hex('ff'), hex('c0 80'), hex('ed a0 80'), hex('e2 82'), hex('61 80 62'), hex('f4 90 80 80')]) {
    assertReply(parseUserPass(userPass(ascii('user'), bad)), Reply.GENERAL_FAILURE, 'utf8');
    assertReply(parseUserPass(userPass(bad, ascii('pass'))), Reply.GENERAL_FAILURE, 'utf8');
  }
});

test('RFC 1929: a leading byte-order mark is kept, so it cannot collide with the bare name', () => {
  const r = parseUserPass(userPass(hex('ef bb bf 61'), ascii('x')));
  assertOk(r, { username: '\uFEFFa', password: 'x' }, 8);
});

test('RFC 1929: status encodes 01 00 for success and 01 01 for failure', () => {
  assert.deepEqual(encodeUserPassStatus(true), hex('01 00'));
  assert.deepEqual(encodeUserPassStatus(false), hex('01 01'));
});

// ---------------------------------------------------------------------------------------------
// Requests

test('request with every address type parses', () => {
  assertOk(
    parseRequest(hex('05 01 00 01 7f000001 0050')),
    { command: Command.CONNECT, address: { kind: 'ipv4', ip: '127.0.0.1' }, port: 80 },
    10,
  );
  assertOk(
    parseRequest(hex('05 01 00 04 00000000000000000000000000000001 01bb')),
    { command: Command.CONNECT, address: { kind: 'ipv6', ip: '::1' }, port: 443 },
    22,
  );
  assertOk(
    parseRequest(hex('05 01 00 04 fd010001000000000000000000000002 1f90')),
    { command: Command.CONNECT, address: { kind: 'ipv6', ip: 'fd01:1::2' }, port: 8080 },
    22,
  );
  assertOk(
    parseRequest(hex('05 01 00 04 00000000000000000000ffff01020304 0035')),
    { command: Command.CONNECT, address: { kind: 'ipv6', ip: '::ffff:1.2.3.4' }, port: 53 },
    22,
  );
  assertOk(
    parseRequest(cat(hex('05 01 00 03 0b'), ascii('example.com'), hex('01bb'))),
    { command: Command.CONNECT, address: { kind: 'domain', name: 'example.com' }, port: 443 },
    18,
  );
});

test('request with every known command parses', () => {
  for (const command of Object.values(Command)) {
    const r = parseRequest(request(command, { ip: '0.0.0.0' }, 0));
    assertOk(r, { command, address: { kind: 'ipv4', ip: '0.0.0.0' }, port: 0 }, 10);
  }
});

test('request ports 0 and 65535 and a nonzero RSV parse', () => {
  assertOk(parseRequest(hex('05 01 00 01 0a000001 0000')), { command: 1, address: { kind: 'ipv4', ip: '10.0.0.1' }, port: 0 }, 10);
  assertOk(parseRequest(hex('05 01 ff 01 ffffffff ffff')), { command: 1, address: { kind: 'ipv4', ip: '255.255.255.255' }, port: 65535 }, 10);
});

test('request for a UTF-8 name and a 255-byte name parses', () => {
  const idn = 'bücher.example';
  assertOk(parseRequest(request(1, { kind: 'domain', name: idn }, 443)), { command: 1, address: { kind: 'domain', name: idn }, port: 443 }, 7 + Buffer.byteLength(idn));
  const long = `${'a'.repeat(63)}.`.repeat(4).slice(0, 255);
  assertOk(parseRequest(request(1, { kind: 'domain', name: long }, 1)), { command: 1, address: { kind: 'domain', name: long }, port: 1 }, 262);
});

test('request leaves pipelined client data alone', () => {
  const req = request(Command.CONNECT, { kind: 'domain', name: 'example.com' }, 80);
  const data = ascii('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n');
  const r = parseRequest(cat(req, data));
  assert.ok(r.ok);
  assert.equal(r.used, req.length);
  for (const ip of ['192.0.2.1', '2001:db8::1']) {
    const q = request(Command.CONNECT, { ip }, 443);
    const s = parseRequest(cat(q, hex('16 03 01 02 00 01')));
    assert.ok(s.ok);
    assert.equal(s.used, q.length);
  }
});

test('truncated request asks for the rest at every length', () => {
  assertNeed(parseRequest(new Uint8Array(0)), 4);
  assertNeed(parseRequest(hex('05')), 3);
  assertNeed(parseRequest(hex('05 01 00')), 1);
  assertNeed(parseRequest(hex('05 01 00 01')), 6);
  assertNeed(parseRequest(hex('05 01 00 04')), 18);
  assertNeed(parseRequest(hex('05 01 00 03')), 1); // the length byte
  assertNeed(parseRequest(hex('05 01 00 03 0b')), 13);
  for (const a of [{ ip: '1.2.3.4' }, { ip: 'fd01:1::2' }, { kind: 'domain', name: 'a' }, { kind: 'domain', name: 'example.com' }] as const) {
    assertNeedAtEveryPrefix(parseRequest, request(Command.CONNECT, a, 443));
  }
});

test('request with a wrong version is refused with 0x01 at its first byte', () => {
  assertReply(parseRequest(hex('04')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseRequest(hex('04 01 00 01 7f000001 0050')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseRequest(ascii('GET / HTTP/1.1\r\n')), Reply.GENERAL_FAILURE, 'version');
  assertReply(parseRequest(hex('01 04 61 62 63 64')), Reply.GENERAL_FAILURE, 'version'); // a userpass message
});

test('request with an unknown command is refused with 0x07 once it is whole', () => {
  for (const cmd of [0x00, 0x04, 0x05, 0x80, 0xff]) {
    const msg = request(cmd, { ip: '1.2.3.4' }, 80);
    assertNeedAtEveryPrefix(parseRequest, msg);
    assertReply(parseRequest(msg), Reply.CMD_UNSUPPORTED, 'command');
    const named = request(cmd, { kind: 'domain', name: 'example.com' }, 80);
    assertNeedAtEveryPrefix(parseRequest, named);
    assertReply(parseRequest(cat(named, ascii('data'))), Reply.CMD_UNSUPPORTED, 'command');
  }
});

test('request with an unknown address type is refused with 0x08 as soon as ATYP arrives', () => {
  for (const atyp of [0x00, 0x02, 0x05, 0x06, 0xff]) {
    assertReply(parseRequest(bytes(5, 1, 0, atyp)), Reply.ATYP_UNSUPPORTED, 'atyp');
    assertReply(parseRequest(cat(bytes(5, 1, 0, atyp), Buffer.alloc(30))), Reply.ATYP_UNSUPPORTED, 'atyp');
  }
});

test('request for an empty domain is refused with 0x01', () => {
  assertReply(parseRequest(hex('05 01 00 03 00')), Reply.GENERAL_FAILURE, 'domain empty');
  assertReply(parseRequest(hex('05 01 00 03 00 0050')), Reply.GENERAL_FAILURE, 'domain empty');
});

test('request for a domain with control characters or bad UTF-8 is refused with 0x01', () => {
  const bad = [
    ascii('exa\u0000mple.com'),
    ascii('example.com\r\nX: y'),
    ascii('a\tb'),
    ascii('a\u007fb'),
    Buffer.from('a\u0085b'), // C1 control, encoded in UTF-8
    hex('61 ff 62'),
    hex('c0 ae'), // overlong '.'
    hex('ed a0 80'), // a surrogate
  ];
  for (const name of bad) {
    const msg = cat(bytes(5, 1, 0, 3, name.length), name, hex('0050'));
    assertReply(parseRequest(msg), Reply.GENERAL_FAILURE, 'domain chars');
  }
});

test('garbage requests never throw', () => {
  for (const g of [hex('05 01 00 03 ff'), Buffer.alloc(1024, 0x05), Buffer.alloc(1024, 0xff), Buffer.alloc(65536, 0x00)]) {
    const r = parseRequest(g);
    assert.equal(r.ok, false);
  }
  // 05 05 05 05: unknown ATYP 5.
  assertReply(parseRequest(Buffer.alloc(1024, 0x05)), Reply.ATYP_UNSUPPORTED);
  // 05 03 ff 03 ff + 255 bytes of 0x03: whole request, domain full of control chars.
  assertReply(parseRequest(cat(hex('05 03 ff 03 ff'), Buffer.alloc(300, 3))), Reply.GENERAL_FAILURE, 'domain chars');
});

// ---------------------------------------------------------------------------------------------
// Replies

test('every reply code encodes with a zero IPv4 bound address when none is given', () => {
  for (const rep of Object.values(Reply)) {
    assert.deepEqual(encodeReply(rep), cat(bytes(5, rep, 0, 1), Buffer.alloc(6)));
  }
  assert.deepEqual(encodeReply(0x09), hex('05 09 00 01 00000000 0000')); // unassigned, still a byte
});

test('reply encodes an IPv4 bound address', () => {
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '10.1.1.2', port: 1080 }), hex('05 00 00 01 0a010102 0438'));
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '255.255.255.255', port: 65535 }), hex('05 00 00 01 ffffffff ffff'));
});

test('reply encodes an IPv6 bound address as ATYP 4', () => {
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: 'fd01:1::2', port: 443 }), hex('05 00 00 04 fd010001000000000000000000000002 01bb'));
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '::1', port: 1 }), hex('05 00 00 04 00000000000000000000000000000001 0001'));
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '::', port: 0 }), hex('05 00 00 04 00000000000000000000000000000000 0000'));
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '2001:db8::', port: 0 }), hex('05 00 00 04 20010db8000000000000000000000000 0000'));
  // Any valid spelling gives the same bytes.
  const canonical = encodeReply(0, { ip: 'fd01:1::2', port: 443 });
  for (const ip of ['FD01:0001:0000:0000:0000:0000:0000:0002', 'fd01:1:0:0:0:0:0:2', 'fd01:1::0.0.0.2', 'Fd01:1:0::2']) {
    assert.deepEqual(encodeReply(0, { ip, port: 443 }), canonical, ip);
  }
});

test('reply writes a v4-mapped IPv6 bound address as IPv4', () => {
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '::ffff:1.2.3.4', port: 80 }), hex('05 00 00 01 01020304 0050'));
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '::ffff:7f00:1', port: 80 }), hex('05 00 00 01 7f000001 0050'));
  // IPv4-compatible (::a.b.c.d) is not mapped: it stays IPv6.
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: '::1.2.3.4', port: 80 }), hex('05 00 00 04 00000000000000000000000001020304 0050'));
});

test('reply drops a zone id from a link-local bound address', () => {
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: 'fe80::1%eth0', port: 53 }), hex('05 00 00 04 fe800000000000000000000000000001 0035'));
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, { ip: 'fe80::1%2', port: 53 }), encodeReply(0, { ip: 'fe80::1', port: 53 }));
});

test('reply refuses a bound address that is not an IP, and out-of-range numbers', () => {
  for (const ip of ['', 'localhost', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '1.2.3.4 ', ':::', '1::2::3', '12345::', 'fe80::1%', '::1%e th0', '1:2:3:4:5:6:7:8:9', 'g::1']) {
    assert.throws(() => encodeReply(0, { ip, port: 80 }), TypeError, JSON.stringify(ip));
  }
  for (const port of [-1, 65536, 1.5, Number.NaN]) assert.throws(() => encodeReply(0, { ip: '1.2.3.4', port }), RangeError);
  for (const rep of [-1, 256, 0.5]) assert.throws(() => encodeReply(rep), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Properties

/** A reply carries the same address block as a UDP header: read it back with the codec. */
function readReply(buf: Buffer): { rep: number; address: SocksAddress; port: number } {
  assert.equal(buf[0], Version);
  assert.equal(buf[2], 0);
  const r = parseUdpHeader(cat(bytes(0, 0, 0), buf.subarray(3)));
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.used, buf.length);
  return { rep: buf[1], address: r.value.address, port: r.value.port };
}

test('property: any split of a valid greeting parses like the whole', () => {
  const arb = fc
    .array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 255 })
    .chain((methods) => {
      const msg = cat(bytes(5, methods.length), Buffer.from(methods));
      return fc.tuple(fc.constant(msg), arbSplit(msg), fc.uint8Array({ maxLength: 16 }));
    });
  fc.assert(
    fc.property(arb, ([msg, chunks, trailer]) => checkIncremental(parseGreeting, msg, chunks, Buffer.from(trailer))),
    { numRuns: 1000 },
  );
});

test('property: any split of a valid username/password message parses like the whole', () => {
  const arb = fc.tuple(arbField, arbField).chain(([u, p]) => {
    const msg = userPass(Buffer.from(u), Buffer.from(p));
    return fc.tuple(fc.constant(msg), arbSplit(msg), fc.uint8Array({ maxLength: 16 }));
  });
  fc.assert(
    fc.property(arb, ([msg, chunks, trailer]) => checkIncremental(parseUserPass, msg, chunks, Buffer.from(trailer))),
    { numRuns: 1000 },
  );
});

test('property: any split of a valid request parses like the whole', () => {
  const arb = fc.tuple(fc.integer({ min: 0, max: 255 }), arbAddress, arbPort).chain(([cmd, a, port]) => {
    const msg = request(cmd, a, port);
    return fc.tuple(fc.constant(cmd), fc.constant(msg), arbSplit(msg), fc.uint8Array({ maxLength: 16 }));
  });
  fc.assert(
    fc.property(arb, ([cmd, msg, chunks, trailer]) => {
      if (cmd >= 1 && cmd <= 3) {
        checkIncremental(parseRequest, msg, chunks, Buffer.from(trailer));
      } else {
        // An unknown command: more is asked for until the request is whole, then 0x07.
        let acc: Buffer = Buffer.alloc(0);
        for (let i = 0; i < chunks.length - 1; i++) {
          acc = cat(acc, chunks[i]);
          assert.ok(assertNeed(parseRequest(acc)) <= msg.length - acc.length);
        }
        assertReply(parseRequest(cat(msg, Buffer.from(trailer))), Reply.CMD_UNSUPPORTED, 'command');
      }
    }),
    { numRuns: 2000 },
  );
});

test('property: random bytes give a parse, a need or a reply, never a throw', () => {
  fc.assert(
    fc.property(arbNoise([5], [5, 1], [4]), (buf) => checkTotal(parseGreeting, buf, [Reply.GENERAL_FAILURE])),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(arbNoise([1], [1, 4], [1, 0], [5]), (buf) => checkTotal(parseUserPass, buf, [Reply.GENERAL_FAILURE])),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(arbNoise([5, 1, 0, 1], [5, 1, 0, 3], [5, 1, 0, 4], [5, 3, 0, 3, 4], [5, 9, 0]), (buf) =>
      checkTotal(parseRequest, buf, [Reply.GENERAL_FAILURE, Reply.CMD_UNSUPPORTED, Reply.ATYP_UNSUPPORTED]),
    ),
    { numRuns: 2000 },
  );
});

test('property: requests round-trip for random addresses', () => {
  fc.assert(
    fc.property(arbCommand, arbAddress, arbPort, (command, address, port) => {
      const msg = request(command, address, port);
      assertOk(parseRequest(msg), { command, address, port }, msg.length);
    }),
    { numRuns: 2000 },
  );
});

test('property: replies round-trip for random bound addresses', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 255 }), fc.oneof(arbIPv4, arbIPv6), arbPort, (rep, a, port) => {
      const ip = a.kind === 'domain' ? '' : a.ip;
      const out = readReply(encodeReply(rep, { ip, port }));
      assert.equal(out.rep, rep);
      assert.equal(out.port, port);
      const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
      assert.deepEqual(out.address, mapped ? { kind: 'ipv4', ip: mapped[1] } : a);
    }),
    { numRuns: 2000 },
  );
});
