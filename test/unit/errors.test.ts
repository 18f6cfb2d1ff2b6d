// The one mapping from failures to protocol answers: every HF_* code to its SOCKS5 reply and
// HTTP status, and OS connect/DNS error codes to HF_* codes. The expected table is written out
// here on purpose: a changed answer must be a deliberate change to this file too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AuthError,
  BadRequestError,
  CommandUnsupportedError,
  DialTimeoutError,
  DnsTimeoutError,
  LoopError,
  DnsError,
  EgressLostError,
  EgressUnreachableError,
  HfCode,
  HoldfastError,
  LimitError,
  ResumeRefusedError,
  NoEgressError,
  NotAllowedError,
  Reply,
  codeOfOsError,
  codeTable,
  hfCodeOf,
  replyText,
  toHttpStatus,
  toSocksReply,
} from '../../src/errors.js';

const expected: Record<string, { socks: number; http: number }> = {
  HF_AUTH: { socks: 0x02, http: 407 },
  HF_BAD_REQUEST: { socks: 0x01, http: 400 },
  HF_NOT_ALLOWED: { socks: 0x02, http: 403 },
  HF_NO_EGRESS: { socks: 0x03, http: 503 },
  HF_NET_UNREACHABLE: { socks: 0x03, http: 502 },
  HF_HOST_UNREACHABLE: { socks: 0x04, http: 502 },
  HF_DNS: { socks: 0x04, http: 502 },
  HF_DNS_TIMEOUT: { socks: 0x04, http: 502 },
  HF_REFUSED: { socks: 0x05, http: 502 },
  HF_DIAL_TIMEOUT: { socks: 0x06, http: 504 },
  HF_CMD_UNSUPPORTED: { socks: 0x07, http: 501 },
  HF_ATYP_UNSUPPORTED: { socks: 0x08, http: 501 },
  HF_EGRESS_LOST: { socks: 0x01, http: 502 },
  HF_LIMIT: { socks: 0x01, http: 503 },
  HF_INTERNAL: { socks: 0x01, http: 502 },
  HF_RESUME_REFUSED: { socks: 0x01, http: 502 },
};

const osError = (code: string) => Object.assign(new Error(`connect ${code}`), { code });

test('every HfCode is in the expected table and nothing else is', () => {
  assert.deepEqual(Object.values(HfCode).sort(), Object.keys(expected).sort());
  assert.deepEqual(Object.keys(codeTable).sort(), Object.keys(expected).sort());
});

test('every HfCode maps to its SOCKS5 reply and HTTP status', () => {
  for (const code of Object.values(HfCode)) {
    const err = new HoldfastError(code, 'x');
    assert.equal(hfCodeOf(err), code);
    assert.equal(toSocksReply(err), expected[code].socks, `${code} SOCKS reply`);
    assert.equal(toHttpStatus(err), expected[code].http, `${code} HTTP status`);
  }
});

test('OS error codes map to HF codes and on to the protocol answers', () => {
  const cases: [os: string, hf: string, socks: number, http: number][] = [
    ['ECONNREFUSED', 'HF_REFUSED', 0x05, 502],
    ['ENETUNREACH', 'HF_NET_UNREACHABLE', 0x03, 502],
    ['ENETDOWN', 'HF_NET_UNREACHABLE', 0x03, 502],
    ['EADDRNOTAVAIL', 'HF_NET_UNREACHABLE', 0x03, 502],
    ['ENODEV', 'HF_NET_UNREACHABLE', 0x03, 502],
    ['EHOSTUNREACH', 'HF_HOST_UNREACHABLE', 0x04, 502],
    ['EHOSTDOWN', 'HF_HOST_UNREACHABLE', 0x04, 502],
    ['ETIMEDOUT', 'HF_DIAL_TIMEOUT', 0x06, 504],
    ['ENOTFOUND', 'HF_DNS', 0x04, 502],
    ['EAI_AGAIN', 'HF_DNS', 0x04, 502],
    ['ESERVFAIL', 'HF_DNS', 0x04, 502],
    ['ENODATA', 'HF_DNS', 0x04, 502],
    ['ECONNRESET', 'HF_INTERNAL', 0x01, 502],
    ['EPIPE', 'HF_INTERNAL', 0x01, 502],
  ];
  for (const [os, hf, socks, http] of cases) {
    const err = osError(os);
    assert.equal(codeOfOsError(err), hf, os);
    assert.equal(hfCodeOf(err), hf, os);
    assert.equal(toSocksReply(err), socks, `${os} SOCKS reply`);
    assert.equal(toHttpStatus(err), http, `${os} HTTP status`);
  }
});

test('things that are not OS errors map to HF_INTERNAL', () => {
  for (const v of [new Error('plain'), null, undefined, 'ECONNREFUSED', 42, { code: 7 }, { code: 'NOPE' }]) {
    assert.equal(hfCodeOf(v), 'HF_INTERNAL', String(v));
    assert.equal(toSocksReply(v), 0x01);
    assert.equal(toHttpStatus(v), 502);
  }
});

test('a HoldfastError keeps its own code whatever its cause says', () => {
  const err = new HoldfastError(HfCode.DIAL_TIMEOUT, 'slow', { cause: osError('ECONNREFUSED') });
  assert.equal(hfCodeOf(err), 'HF_DIAL_TIMEOUT');
  assert.equal((err.cause as { code: string }).code, 'ECONNREFUSED');
});

test('each error class carries its code and its own name', () => {
  const cases: [HoldfastError, string, string][] = [
    [new AuthError('x'), 'HF_AUTH', 'AuthError'],
    [new BadRequestError('x'), 'HF_BAD_REQUEST', 'BadRequestError'],
    [new NotAllowedError('x'), 'HF_NOT_ALLOWED', 'NotAllowedError'],
    [new NoEgressError('x'), 'HF_NO_EGRESS', 'NoEgressError'],
    [new DnsError('x', osError('ENOTFOUND')), 'HF_DNS', 'DnsError'],
    [new DialTimeoutError('x'), 'HF_DIAL_TIMEOUT', 'DialTimeoutError'],
    [new DnsTimeoutError('x'), 'HF_DNS_TIMEOUT', 'DnsTimeoutError'],
    [new LoopError('x'), 'HF_NOT_ALLOWED', 'LoopError'],
    [new CommandUnsupportedError('x'), 'HF_CMD_UNSUPPORTED', 'CommandUnsupportedError'],
    [new EgressLostError('x'), 'HF_EGRESS_LOST', 'EgressLostError'],
    [new LimitError('x'), 'HF_LIMIT', 'LimitError'],
    [new ResumeRefusedError('x'), 'HF_RESUME_REFUSED', 'ResumeRefusedError'],
    [new EgressUnreachableError(HfCode.REFUSED, 'x', 'if1 10.0.1.2: HF_REFUSED'), 'HF_REFUSED', 'EgressUnreachableError'],
  ];
  for (const [err, code, name] of cases) {
    assert.ok(err instanceof HoldfastError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, code);
    assert.equal(err.name, name);
  }
  const dns = new DnsError('x', osError('ENOTFOUND'));
  assert.equal((dns.cause as { code: string }).code, 'ENOTFOUND');
});

test('SOCKS reply constants and texts', () => {
  assert.deepEqual(Object.values(Reply), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(replyText(0x05), 'connection refused');
  assert.equal(replyText(0x03), 'network unreachable');
  assert.equal(replyText(0x09), 'unknown reply 0x09');
});
