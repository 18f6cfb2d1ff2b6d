// The SOCKS5 UDP request header (RFC 1928 section 7), formatAddress, and the codec's own IP text
// conversions, checked against node:net (which the codec itself may not import). ~6k fast-check
// runs in all.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { Reply } from '../../src/errors.js';
import { encodeUdpHeader, formatAddress, parseUdpHeader, type Parsed, type SocksAddress, type UdpHeader } from '../../src/inbound/socks5.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const bytes = (...xs: number[]): Buffer => Buffer.from(xs);
const cat = (...bs: Uint8Array[]): Buffer => Buffer.concat(bs);

function assertOk(r: Parsed<UdpHeader>, value: UdpHeader, used: number): void {
  assert.ok(r.ok, `expected ok, got ${JSON.stringify(r)}`);
  assert.deepEqual(r.value, value);
  assert.equal(r.used, used);
}

function assertReply(r: Parsed<UdpHeader>, reply: number, why?: string): void {
  assert.ok(!r.ok && 'reply' in r, `expected reply 0x${reply.toString(16)}, got ${JSON.stringify(r)}`);
  assert.equal(r.reply, reply);
  if (why !== undefined) assert.equal(r.why, why);
}

/** Node's canonical text for an IPv6 address. */
const nodeIPv6 = (ip: string): string => new net.SocketAddress({ address: ip.replace(/%.*$/, ''), family: 'ipv6' }).address;

/** The codec's text for 16 bytes: an ATYP 4 header, parsed. */
function codecIPv6(b16: Uint8Array): string {
  const r = parseUdpHeader(cat(hex('0000 00 04'), b16, hex('0000')));
  assert.ok(r.ok && r.value.address.kind === 'ipv6');
  return r.value.address.ip;
}

/** Node's text for 16 bytes, from the fully spelled-out form. */
function nodeTextOf(b16: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b16[i] << 8) | b16[i + 1]).toString(16));
  return nodeIPv6(words.join(':'));
}

const arbWords = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.constant(1), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), {
  minLength: 8,
  maxLength: 8,
});
const wordsToBytes = (ws: number[]): Buffer => {
  const b = Buffer.alloc(16);
  ws.forEach((w, i) => b.writeUInt16BE(w, 2 * i));
  return b;
};
const arbIPv6Bytes = fc.oneof(arbWords.map(wordsToBytes), fc.uint8Array({ minLength: 16, maxLength: 16 }).map((u) => Buffer.from(u)));
const arbAddress = fc.oneof(
  fc.ipV4().map((ip): SocksAddress => ({ kind: 'ipv4', ip })),
  fc.oneof(fc.ipV6(), arbIPv6Bytes.map(nodeTextOf)).map((t): SocksAddress => ({ kind: 'ipv6', ip: nodeIPv6(t) })),
  fc
    .oneof(fc.domain(), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }))
    .filter((n) => !/[\u0000-\u001f\u007f-\u009f]|\p{Cs}/u.test(n) && Buffer.byteLength(n) <= 255)
    .map((name): SocksAddress => ({ kind: 'domain', name })),
);

// ---------------------------------------------------------------------------------------------
// parseUdpHeader

test('UDP header with every address type parses; used is the header length', () => {
  const payload = Buffer.from('dns query bytes');
  assertOk(parseUdpHeader(cat(hex('0000 00 01 08080808 0035'), payload)), { frag: 0, address: { kind: 'ipv4', ip: '8.8.8.8' }, port: 53 }, 10);
  assertOk(
    parseUdpHeader(cat(hex('0000 00 04 20014860486000000000000000008888 0035'), payload)),
    { frag: 0, address: { kind: 'ipv6', ip: '2001:4860:4860::8888' }, port: 53 },
    22,
  );
  assertOk(
    parseUdpHeader(cat(hex('0000 00 03 0b'), Buffer.from('example.com'), hex('01bb'), payload)),
    { frag: 0, address: { kind: 'domain', name: 'example.com' }, port: 443 },
    18,
  );
});

test('UDP header with no payload parses', () => {
  assertOk(parseUdpHeader(hex('0000 00 01 7f000001 ffff')), { frag: 0, address: { kind: 'ipv4', ip: '127.0.0.1' }, port: 65535 }, 10);
});

test('UDP header returns FRAG as sent and ignores RSV', () => {
  assertOk(parseUdpHeader(hex('0000 01 01 01020304 0001')), { frag: 1, address: { kind: 'ipv4', ip: '1.2.3.4' }, port: 1 }, 10);
  assertOk(parseUdpHeader(hex('0000 ff 01 01020304 0001')), { frag: 0xff, address: { kind: 'ipv4', ip: '1.2.3.4' }, port: 1 }, 10);
  assertOk(parseUdpHeader(hex('abcd 00 01 01020304 0001')), { frag: 0, address: { kind: 'ipv4', ip: '1.2.3.4' }, port: 1 }, 10);
});

test('truncated UDP header is an error at every length, never a need', () => {
  for (const whole of [
    hex('0000 00 01 01020304 0035'),
    hex('0000 00 04 00000000000000000000000000000001 0035'),
    cat(hex('0000 00 03 03'), Buffer.from('a.b'), hex('0035')),
  ]) {
    for (let k = 0; k < whole.length; k++) assertReply(parseUdpHeader(whole.subarray(0, k)), Reply.GENERAL_FAILURE, 'truncated');
  }
});

test('UDP header with an unknown address type is refused with 0x08', () => {
  for (const atyp of [0x00, 0x02, 0x05, 0xff]) {
    assertReply(parseUdpHeader(cat(bytes(0, 0, 0, atyp), Buffer.alloc(20))), Reply.ATYP_UNSUPPORTED, 'atyp');
  }
});

test('UDP header with an empty or unprintable domain is refused with 0x01', () => {
  assertReply(parseUdpHeader(hex('0000 00 03 00 0035')), Reply.GENERAL_FAILURE, 'domain empty');
  assertReply(parseUdpHeader(hex('0000 00 03 03 610062 0035')), Reply.GENERAL_FAILURE, 'domain chars');
  assertReply(parseUdpHeader(hex('0000 00 03 03 61ff62 0035')), Reply.GENERAL_FAILURE, 'domain chars');
});

// ---------------------------------------------------------------------------------------------
// encodeUdpHeader

test('UDP header encodes every address type', () => {
  assert.deepEqual(encodeUdpHeader({ kind: 'ipv4', ip: '8.8.4.4' }, 53), hex('0000 00 01 08080404 0035'));
  assert.deepEqual(encodeUdpHeader({ kind: 'ipv6', ip: '2001:db8::1' }, 53), hex('0000 00 04 20010db8000000000000000000000001 0035'));
  assert.deepEqual(encodeUdpHeader({ kind: 'domain', name: 'bücher.de' }, 80), cat(hex('0000 00 03 0a'), Buffer.from('bücher.de'), hex('0050')));
  assert.deepEqual(encodeUdpHeader({ ip: '9.9.9.9' }, 53, 3), hex('0000 03 01 09090909 0035'));
});

test('UDP header from a bare rinfo address writes v4-mapped IPv6 as IPv4, a typed ipv6 as given', () => {
  assert.deepEqual(encodeUdpHeader({ ip: '::ffff:192.0.2.7' }, 5353), hex('0000 00 01 c0000207 14e9'));
  assert.deepEqual(encodeUdpHeader({ kind: 'ipv6', ip: '::ffff:192.0.2.7' }, 5353), hex('0000 00 04 00000000000000000000ffffc0000207 14e9'));
  assert.deepEqual(encodeUdpHeader({ ip: 'fe80::1%eth0' }, 1), hex('0000 00 04 fe800000000000000000000000000001 0001'));
});

test('UDP header refuses addresses that do not fit, and numbers out of range', () => {
  assert.throws(() => encodeUdpHeader({ kind: 'ipv4', ip: '::1' }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ kind: 'ipv6', ip: '1.2.3.4' }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ kind: 'ipv4', ip: 'example.com' }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ ip: 'example.com' }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ kind: 'domain', name: '' }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ kind: 'domain', name: 'a'.repeat(256) }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ kind: 'domain', name: 'ü'.repeat(128) }, 1), TypeError); // 256 bytes
  assert.throws(() => encodeUdpHeader({ kind: 'domain', name: 'a\nb' }, 1), TypeError);
  assert.throws(() => encodeUdpHeader({ kind: 'domain', name: 'a\ud800b' }, 1), TypeError);
  assert.doesNotThrow(() => encodeUdpHeader({ kind: 'domain', name: 'a'.repeat(255) }, 1));
  assert.throws(() => encodeUdpHeader({ ip: '1.2.3.4' }, 65536), RangeError);
  assert.throws(() => encodeUdpHeader({ ip: '1.2.3.4' }, 1, 256), RangeError);
});

// ---------------------------------------------------------------------------------------------
// formatAddress

test('formatAddress gives the IP or the name as held', () => {
  assert.equal(formatAddress({ kind: 'ipv4', ip: '10.0.0.1' }), '10.0.0.1');
  assert.equal(formatAddress({ kind: 'ipv6', ip: 'fd01:1::2' }), 'fd01:1::2');
  assert.equal(formatAddress({ kind: 'domain', name: 'example.com' }), 'example.com');
});

// ---------------------------------------------------------------------------------------------
// IP text, against node:net

test('IPv6 text matches Node for notable addresses', () => {
  for (const ip of ['::', '::1', '::2', '1::', 'fd01:1::2', '1:0:0:1:0:0:0:1', '1:0:1:0:1:0:1:0', '::ffff:1.2.3.4', '::ffff:0:0', '::1.2.3.4', '::0.1.0.0', '0:0:0:0:0:1:0:0', '::100', '2001:db8:0:0:1:0:0:1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']) {
    const b = encodeUdpHeader({ kind: 'ipv6', ip }, 0).subarray(4, 20);
    assert.equal(codecIPv6(b), nodeIPv6(ip), ip);
  }
});

test('property: IPv6 bytes format as Node formats them', () => {
  fc.assert(
    fc.property(arbIPv6Bytes, (b) => {
      assert.equal(codecIPv6(b), nodeTextOf(b));
    }),
    { numRuns: 1500 },
  );
});

test('property: IP text is accepted exactly when net.isIP accepts it, with the same bytes', () => {
  const chars = fc.constantFrom(...'0123456789abcdefABCDEFg:::::....%%-zZ'.split(''));
  const arbText = fc.oneof(
    fc.string({ unit: chars, maxLength: 45 }),
    fc.ipV6(),
    fc.ipV4(),
    fc.ipV4Extended(),
    fc.tuple(fc.ipV6(), fc.string({ unit: chars, maxLength: 6 })).map(([a, z]) => `${a}%${z}`),
    fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 40 }), fc.string({ unit: chars, maxLength: 3 })).map(([a, i, s]) => a.slice(0, i) + s + a.slice(i)),
  );
  fc.assert(
    fc.property(arbText, (text) => {
      const family = net.isIP(text);
      let out: Buffer | undefined;
      try {
        out = encodeUdpHeader({ ip: text }, 0);
      } catch (err) {
        assert.ok(err instanceof TypeError, String(err));
      }
      assert.equal(out !== undefined, family !== 0, `${JSON.stringify(text)}: net.isIP ${family}`);
      if (out === undefined) return;
      const r = parseUdpHeader(out);
      assert.ok(r.ok);
      if (family === 4) {
        assert.deepEqual(r.value.address, { kind: 'ipv4', ip: text });
      } else {
        const canonical = nodeIPv6(text);
        const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(canonical);
        assert.deepEqual(r.value.address, mapped ? { kind: 'ipv4', ip: mapped[1] } : { kind: 'ipv6', ip: canonical });
      }
    }),
    { numRuns: 2000 },
  );
});

// ---------------------------------------------------------------------------------------------
// Properties of the header

test('property: UDP headers round-trip for random addresses, ports and FRAG', () => {
  fc.assert(
    fc.property(arbAddress, fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 64 }), (address, port, frag, payload) => {
      const head = encodeUdpHeader(address, port, frag);
      const r = parseUdpHeader(cat(head, payload));
      assertOk(r, { frag, address, port }, head.length);
    }),
    { numRuns: 1500 },
  );
});

test('property: random datagrams give a header or a reply, never a throw or a need', () => {
  const arb = fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.tuple(fc.constantFrom([0, 0, 0, 1], [0, 0, 0, 3], [0, 0, 0, 4], [0, 0, 1, 3, 5]), fc.uint8Array({ maxLength: 300 })).map(([h, t]) => cat(Buffer.from(h), t)),
  );
  fc.assert(
    fc.property(arb, (buf) => {
      const r = parseUdpHeader(buf);
      if (r.ok) {
        assert.ok(r.used >= 7 && r.used <= buf.length);
        assert.deepEqual(parseUdpHeader(buf.subarray(0, r.used)), r);
      } else {
        assert.ok('reply' in r, `a datagram never needs more: ${JSON.stringify(r)}`);
        assert.ok(([Reply.GENERAL_FAILURE, Reply.ATYP_UNSUPPORTED] as number[]).includes(r.reply));
      }
    }),
    { numRuns: 1500 },
  );
});
