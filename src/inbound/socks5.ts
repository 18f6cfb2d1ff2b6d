// The SOCKS5 wire codec (RFC 1928, RFC 1929): pure functions over bytes, no sockets, no state.
// A session keeps its own buffer, calls a parse function after every read and acts on the
// result: `need` (read more, at least that many bytes), `reply` (send that reply code, close) or
// `value` + `used` (the message is the first `used` bytes; anything after it is the client's next
// message or payload and is left alone). One read is not one message: every parser accepts any
// prefix and never throws on input. Encoders throw only on caller bugs (a bound address that is
// not an IP, a port out of range), never on anything a client sent. From node:net it takes only
// the IP text functions: no sockets.

import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Reply } from '../errors.js';

export const Version = 0x05;

/** RFC 1928 section 3 methods, and 0xFF: no acceptable method. */
export const Method = { NO_AUTH: 0x00, GSSAPI: 0x01, USER_PASS: 0x02, NO_ACCEPTABLE: 0xff } as const;
export type Method = (typeof Method)[keyof typeof Method];

export const Command = { CONNECT: 0x01, BIND: 0x02, UDP_ASSOCIATE: 0x03 } as const;
export type Command = (typeof Command)[keyof typeof Command];

export const Atyp = { IPV4: 0x01, DOMAIN: 0x03, IPV6: 0x04 } as const;
export type Atyp = (typeof Atyp)[keyof typeof Atyp];

/** A name or an IP, never both. `ip` is canonical text (IPv6 compressed as Node prints it). */
export type SocksAddress = { kind: 'ipv4'; ip: string } | { kind: 'ipv6'; ip: string } | { kind: 'domain'; name: string };

/**
 * - `ok: true`: `value` is the first `used` bytes of the buffer.
 * - `need`: the message is incomplete; at least `need` (>= 1) more bytes are needed. It counts the
 *   bytes missing from the part whose length is known so far, so it never exceeds what the whole
 *   message still lacks: reading exactly `need` more bytes and parsing again is always safe.
 * - `reply`: a protocol error; send this reply code and close. `why` is a short fixed token for
 *   logs: 'version', 'no methods', 'command', 'atyp', 'domain empty', 'domain chars', 'utf8',
 *   'truncated'.
 */
export type Parsed<T> = { ok: true; value: T; used: number } | { ok: false; need: number } | { ok: false; reply: Reply; why: string };

export interface SocksRequest {
  command: Command;
  address: SocksAddress;
  port: number;
}

export interface UdpHeader {
  frag: number;
  address: SocksAddress;
  port: number;
}

/** RFC 1929 sub-negotiation version. */
const USER_PASS_VERSION = 0x01;

function need(n: number): { ok: false; need: number } {
  return { ok: false, need: n };
}
function fail(reply: Reply, why: string): { ok: false; reply: Reply; why: string } {
  return { ok: false, reply, why };
}

// ---------------------------------------------------------------------------------------------
// Client to server

/** VER NMETHODS METHODS. A bad version or an empty method list is answered with 0x01. */
export function parseGreeting(buf: Uint8Array): Parsed<{ methods: number[] }> {
  const len = buf.length;
  if (len === 0) return need(2);
  if (buf[0] !== Version) return fail(Reply.GENERAL_FAILURE, 'version');
  if (len === 1) return need(1);
  const n = buf[1];
  if (n === 0) return fail(Reply.GENERAL_FAILURE, 'no methods');
  const total = 2 + n;
  if (len < total) return need(total - len);
  const methods = new Array<number>(n);
  for (let i = 0; i < n; i++) methods[i] = buf[2 + i];
  return { ok: true, value: { methods }, used: total };
}

/**
 * RFC 1929: VER(1) ULEN UNAME PLEN PASSWD. Both are decoded as strict UTF-8 (invalid bytes are
 * refused rather than replaced, so two different passwords never decode to the same string).
 * Empty fields are accepted on the wire (curl sends PLEN 0 for `user@`); the authenticator
 * decides. A failure here should be answered with `encodeUserPassStatus(false)`.
 */
export function parseUserPass(buf: Uint8Array): Parsed<{ username: string; password: string }> {
  const len = buf.length;
  if (len === 0) return need(2);
  if (buf[0] !== USER_PASS_VERSION) return fail(Reply.GENERAL_FAILURE, 'version');
  if (len === 1) return need(1);
  const ulen = buf[1];
  const plenAt = 2 + ulen;
  if (len <= plenAt) return need(plenAt + 1 - len);
  const plen = buf[plenAt];
  const total = plenAt + 1 + plen;
  if (len < total) return need(total - len);
  const username = decodeUtf8(buf, 2, plenAt);
  const password = decodeUtf8(buf, plenAt + 1, total);
  if (username === undefined || password === undefined) return fail(Reply.GENERAL_FAILURE, 'utf8');
  return { ok: true, value: { username, password }, used: total };
}

/**
 * VER CMD RSV ATYP DST.ADDR DST.PORT. RSV is ignored. A bad version (0x01) or an unknown address
 * type (0x08) is answered at once: the request's end cannot be found. An unknown command (0x07)
 * is answered once the whole request has arrived, so the reply follows the read of the request.
 */
export function parseRequest(buf: Uint8Array): Parsed<SocksRequest> {
  const len = buf.length;
  if (len === 0) return need(4);
  if (buf[0] !== Version) return fail(Reply.GENERAL_FAILURE, 'version');
  if (len < 4) return need(4 - len);
  const end = addressEnd(buf, 3);
  if (end < 0) return end === NEED_LEN ? need(5 - len) : failEnd(end);
  const total = end + 2;
  if (len < total) return need(total - len);
  const cmd = buf[1];
  if (cmd !== Command.CONNECT && cmd !== Command.BIND && cmd !== Command.UDP_ASSOCIATE) {
    return fail(Reply.CMD_UNSUPPORTED, 'command');
  }
  const address = readAddress(buf, 3, end);
  if (address === undefined) return fail(Reply.GENERAL_FAILURE, 'domain chars');
  return { ok: true, value: { command: cmd, address, port: (buf[end] << 8) | buf[end + 1] }, used: total };
}

/**
 * RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA. `used` is the header length; the payload follows.
 * A datagram is whole, so a short one is an error (`why: 'truncated'`), never `need`. RSV is
 * ignored; FRAG is returned as is (a session that does not reassemble drops FRAG != 0).
 */
export function parseUdpHeader(buf: Uint8Array): Parsed<UdpHeader> {
  const len = buf.length;
  if (len < 4) return fail(Reply.GENERAL_FAILURE, 'truncated');
  const end = addressEnd(buf, 3);
  if (end < 0) return end === NEED_LEN ? fail(Reply.GENERAL_FAILURE, 'truncated') : failEnd(end);
  const total = end + 2;
  if (len < total) return fail(Reply.GENERAL_FAILURE, 'truncated');
  const address = readAddress(buf, 3, end);
  if (address === undefined) return fail(Reply.GENERAL_FAILURE, 'domain chars');
  return { ok: true, value: { frag: buf[2], address, port: (buf[end] << 8) | buf[end + 1] }, used: total };
}

// ---------------------------------------------------------------------------------------------
// Server to client

/** VER METHOD: `05 MM`. */
export function encodeMethod(method: number): Buffer {
  const out = Buffer.allocUnsafe(2);
  out[0] = Version;
  out[1] = checkByte(method, 'method');
  return out;
}

/** RFC 1929 status: `01 00` on success, `01 01` on failure. */
export function encodeUserPassStatus(ok: boolean): Buffer {
  const out = Buffer.allocUnsafe(2);
  out[0] = USER_PASS_VERSION;
  out[1] = ok ? 0x00 : 0x01;
  return out;
}

/**
 * VER REP RSV ATYP BND.ADDR BND.PORT. Without `bound`: IPv4 0.0.0.0:0. An IPv4-mapped IPv6
 * address ('::ffff:1.2.3.4', as a dual-stack socket reports) is written as IPv4; a zone id
 * ('fe80::1%eth0') is dropped. Throws TypeError if `bound.ip` is not an IP address and
 * RangeError for a reply or port out of range.
 */
export function encodeReply(reply: number, bound?: { ip: string; port: number }): Buffer {
  const rep = checkByte(reply, 'reply');
  if (bound === undefined) {
    const out = Buffer.allocUnsafe(10);
    out[0] = Version;
    out[1] = rep;
    out[2] = 0x00;
    out[3] = Atyp.IPV4;
    out.fill(0, 4, 10);
    return out;
  }
  const out = encodeIpPort(3, bound.ip, bound.port, true);
  out[0] = Version;
  out[1] = rep;
  out[2] = 0x00;
  return out;
}

/**
 * RSV(2) FRAG ATYP DST.ADDR DST.PORT, to put before a payload going to the client. A bare
 * `{ ip }` (an rinfo address) is written like encodeReply's bound: a v4-mapped IPv6 address
 * becomes IPv4. A SocksAddress is written as its kind says ('ipv6' stays 16 bytes even if
 * v4-mapped). Throws TypeError for an address that does not fit its kind, or a domain that is
 * empty, longer than 255 bytes or holds control characters; RangeError for port or frag.
 */
export function encodeUdpHeader(address: { ip: string } | SocksAddress, port: number, frag = 0): Buffer {
  const f = checkByte(frag, 'frag');
  let out: Buffer;
  if (!('kind' in address)) {
    out = encodeIpPort(3, address.ip, port, true);
  } else if (address.kind === 'domain') {
    out = encodeDomainPort(3, address.name, port);
  } else {
    out = encodeTypedIpPort(3, address.kind, address.ip, port);
  }
  out[0] = 0x00;
  out[1] = 0x00;
  out[2] = f;
  return out;
}

/** For logs: the IP or name as held (IPv6 without brackets). */
export function formatAddress(a: SocksAddress): string {
  return a.kind === 'domain' ? a.name : a.ip;
}

// ---------------------------------------------------------------------------------------------
// Addresses on the wire

const NEED_LEN = -1; // a domain's length byte has not arrived
const BAD_ATYP = -2;
const EMPTY_DOMAIN = -3;

function failEnd(code: number): { ok: false; reply: Reply; why: string } {
  return code === BAD_ATYP ? fail(Reply.ATYP_UNSUPPORTED, 'atyp') : fail(Reply.GENERAL_FAILURE, 'domain empty');
}

/** Offset just past DST.ADDR (where the port starts) for the ATYP at `at`, or a negative code. */
function addressEnd(buf: Uint8Array, at: number): number {
  switch (buf[at]) {
    case Atyp.IPV4:
      return at + 5;
    case Atyp.IPV6:
      return at + 17;
    case Atyp.DOMAIN: {
      if (buf.length <= at + 1) return NEED_LEN;
      const n = buf[at + 1];
      return n === 0 ? EMPTY_DOMAIN : at + 2 + n;
    }
    default:
      return BAD_ATYP;
  }
}

/** The address whose ATYP is at `at` and which ends at `end`; undefined for a bad domain. */
function readAddress(buf: Uint8Array, at: number, end: number): SocksAddress | undefined {
  switch (buf[at]) {
    case Atyp.IPV4:
      return { kind: 'ipv4', ip: formatIPv4(buf, at + 1) };
    case Atyp.IPV6:
      return { kind: 'ipv6', ip: formatIPv6(buf, at + 1) };
    default: {
      const name = decodeUtf8(buf, at + 2, end);
      if (name === undefined || CONTROL.test(name)) return undefined;
      return { kind: 'domain', name };
    }
  }
}

/** C0 and C1 controls, DEL, and lone surrogates (which UTF-8 cannot carry). */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]|\p{Cs}/u;

// Strict and BOM-preserving: decoding is one-to-one, so distinct bytes never meet as one string.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(buf: Uint8Array, start: number, end: number): string | undefined {
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (buf[i] > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) {
    // The common case: a short ASCII name. No view, no decoder.
    if (Buffer.isBuffer(buf)) return buf.toString('latin1', start, end);
    let s = '';
    for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]);
    return s;
  }
  try {
    return utf8.decode(buf.subarray(start, end));
  } catch {
    return undefined;
  }
}

function checkByte(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`SOCKS5 ${what} out of range: ${v}`);
  return v;
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`port out of range: ${port}`);
  return port;
}

/** A buffer of `head` free bytes, then ATYP, the address of `ip`, and `port`. */
function encodeIpPort(head: number, ip: string, port: number, unmap: boolean): Buffer {
  checkPort(port);
  let out: Buffer;
  if (ip.indexOf(':') < 0) {
    const bytes = ipBytes(ip, false);
    if (!bytes) throw new TypeError(`not an IP address: ${ip}`);
    out = Buffer.allocUnsafe(head + 7);
    out.set(bytes, head + 1);
    out[head] = Atyp.IPV4;
  } else {
    const bytes = ipBytes(ip, true);
    if (!bytes) throw new TypeError(`not an IP address: ${ip}`);
    out = Buffer.allocUnsafe(head + 19);
    out.set(bytes, head + 1);
    if (unmap && isV4Mapped(out, head + 1)) {
      const v4 = Buffer.allocUnsafe(head + 7);
      out.copy(v4, head + 1, head + 13, head + 17);
      out = v4;
      out[head] = Atyp.IPV4;
    } else {
      out[head] = Atyp.IPV6;
    }
  }
  const p = out.length - 2;
  out[p] = port >>> 8;
  out[p + 1] = port & 0xff;
  return out;
}

function encodeTypedIpPort(head: number, kind: 'ipv4' | 'ipv6', ip: string, port: number): Buffer {
  const isV6 = ip.indexOf(':') >= 0;
  if (isV6 !== (kind === 'ipv6')) throw new TypeError(`not an ${kind} address: ${ip}`);
  return encodeIpPort(head, ip, port, false);
}

function encodeDomainPort(head: number, name: string, port: number): Buffer {
  checkPort(port);
  const n = Buffer.byteLength(name, 'utf8');
  if (n === 0 || n > 255 || CONTROL.test(name)) throw new TypeError(`not a SOCKS5 domain name: ${JSON.stringify(name)}`);
  const out = Buffer.allocUnsafe(head + 2 + n + 2);
  out[head] = Atyp.DOMAIN;
  out[head + 1] = n;
  out.write(name, head + 2, n, 'utf8');
  out[head + 2 + n] = port >>> 8;
  out[head + 3 + n] = port & 0xff;
  return out;
}

function isV4Mapped(b: Uint8Array, off: number): boolean {
  for (let i = 0; i < 10; i++) if (b[off + i] !== 0) return false;
  return b[off + 10] === 0xff && b[off + 11] === 0xff;
}

// ---------------------------------------------------------------------------------------------
// IP text <-> bytes: node:net says what text is valid; ipaddr.js turns IPv6 text into bytes and
// bytes into RFC 5952 text, printed as Node prints addresses everywhere else (libuv's inet_ntop).

function formatIPv4(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** As inet_ntop prints it: RFC 5952 (ipaddr.js), and libuv's two dotted forms, ::ffff:a.b.c.d and ::a.b.c.d. */
function formatIPv6(b: Uint8Array, off: number): string {
  let zeros = 0;
  while (zeros < 12 && b[off + zeros] === 0) zeros++;
  if (zeros >= 10 && b[off + 10] === 0xff && b[off + 11] === 0xff) return `::ffff:${formatIPv4(b, off + 12)}`;
  if (zeros === 12 && (b[off + 12] !== 0 || b[off + 13] !== 0)) return `::${formatIPv4(b, off + 12)}`;
  return new ipaddr.IPv6(Array.from(b.subarray(off, off + 16))).toRFC5952String();
}

/** The last IPv4 text read and its bytes: every reply on one interface names the same address. */
let lastV4: { text: string; bytes: readonly number[] } = { text: '0.0.0.0', bytes: [0, 0, 0, 0] };

/** IPv4 (strict dotted quad, as net.isIPv4) or IPv6 text ('%zone' dropped) as bytes, or undefined. */
function ipBytes(text: string, v6: boolean): readonly number[] | undefined {
  if (!v6) {
    if (text === lastV4.text) return lastV4.bytes;
    if (!isIPv4(text)) return undefined;
    lastV4 = { text, bytes: text.split('.').map(Number) };
    return lastV4.bytes;
  }
  if (!isIPv6(text)) return undefined;
  const pct = text.indexOf('%');
  // ipaddr.js reads the deprecated IPv4-compatible '::a.b.c.d' as mapped ('::ffff:a.b.c.d'): give
  // it a dotted tail as two hex groups instead (the text is valid IPv6 already, so 0-255 each)
  const hex = (pct < 0 ? text : text.slice(0, pct)).replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a, b, c, d) =>
    `${((+a << 8) | +b).toString(16)}:${((+c << 8) | +d).toString(16)}`,
  );
  return ipaddr.IPv6.parse(hex).toByteArray();
}
