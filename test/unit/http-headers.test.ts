// The HTTP inbound's pure helpers: which request headers are forwarded to the origin, and how a
// CONNECT authority is parsed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forwardableHeaders, parseAuthority } from '../../src/inbound/http.js';

/** [name, value, name, value, ...] as node's rawHeaders gives them. */
const raw = (...pairs: [string, string][]) => pairs.flat();

// ---------------------------------------------------------------------------------------------
// forwardableHeaders

test('forwardableHeaders strips hop-by-hop headers and the proxy\'s own, in any case', () => {
  const out = forwardableHeaders(
    raw(
      ['Host', 'example.com'],
      ['Connection', 'keep-alive'],
      ['Keep-Alive', 'timeout=5'],
      ['Proxy-Connection', 'keep-alive'],
      ['Proxy-Authorization', 'Basic dXNlcjpwYXNz'],
      ['TE', 'trailers'],
      ['Trailer', 'X-Checksum'],
      ['Transfer-Encoding', 'chunked'],
      ['Upgrade', 'websocket'],
      ['Expect', '100-continue'],
      ['PROXY-AUTHORIZATION', 'Basic Zm9vOmJhcg=='],
      ['Accept', '*/*'],
    ),
  );
  assert.deepEqual(out, raw(['Host', 'example.com'], ['Accept', '*/*']));
});

test('forwardableHeaders strips every header the Connection header names', () => {
  const out = forwardableHeaders(
    raw(
      ['X-Before', 'named later'],
      ['Connection', 'close, X-Before,  x-secret-hop '],
      ['Connection', 'X-Second-Line'],
      ['X-Secret-Hop', '1'],
      ['x-second-line', '2'],
      ['X-Kept', '3'],
    ),
  );
  assert.deepEqual(out, raw(['X-Kept', '3']));
});

test('forwardableHeaders strips headers named by Proxy-Connection too', () => {
  assert.deepEqual(forwardableHeaders(raw(['Proxy-Connection', 'X-Hop'], ['X-Hop', '1'], ['A', 'b'])), raw(['A', 'b']));
});

test('forwardableHeaders keeps order, original case and duplicates', () => {
  const input = raw(
    ['Cookie', 'a=1'],
    ['user-agent', 'curl/8'],
    ['Cookie', 'b=2'],
    ['X-Forwarded-For', '10.0.0.1'],
    ['x-forwarded-for', '10.0.0.2'],
    ['Authorization', 'Bearer t'],
  );
  assert.deepEqual(forwardableHeaders(input), input);
});

test('forwardableHeaders of nothing is nothing, and the input is not modified', () => {
  assert.deepEqual(forwardableHeaders([]), []);
  const input = raw(['Connection', 'X-A'], ['X-A', '1'], ['B', '2']);
  const copy = [...input];
  forwardableHeaders(input);
  assert.deepEqual(input, copy);
});

test('forwardableHeaders with dropHost strips every Host (any case) as well as hop-by-hop, in one pass', () => {
  const input = raw(['Host', 'a.example'], ['Connection', 'close, X-Hop'], ['X-Hop', '1'], ['HOST', 'b.example'], ['Accept', '*/*'], ['Te', 'x']);
  assert.deepEqual(forwardableHeaders(input, true), raw(['Accept', '*/*']));
  // without it, Host stays (a plain filter of hop-by-hop headers)
  assert.deepEqual(forwardableHeaders(input), raw(['Host', 'a.example'], ['HOST', 'b.example'], ['Accept', '*/*']));
});

// ---------------------------------------------------------------------------------------------
// parseAuthority

test('parseAuthority: name, bracketed IPv6 and IPv4 with a port', () => {
  assert.deepEqual(parseAuthority('example.com:443'), { host: 'example.com', port: 443, isName: true });
  assert.deepEqual(parseAuthority('host:443'), { host: 'host', port: 443, isName: true });
  assert.deepEqual(parseAuthority('[::1]:443'), { host: '::1', port: 443, isName: false });
  assert.deepEqual(parseAuthority('[2001:db8::1]:8443'), { host: '2001:db8::1', port: 8443, isName: false });
  assert.deepEqual(parseAuthority('[::ffff:1.2.3.4]:80'), { host: '::ffff:1.2.3.4', port: 80, isName: false });
  assert.deepEqual(parseAuthority('1.2.3.4:80'), { host: '1.2.3.4', port: 80, isName: false });
  assert.deepEqual(parseAuthority('a:1'), { host: 'a', port: 1, isName: true });
  assert.deepEqual(parseAuthority('a:65535'), { host: 'a', port: 65535, isName: true });
});

test('parseAuthority rejects a missing or bad port and malformed hosts', () => {
  for (const bad of [
    'host',
    'host:',
    'host:0',
    'host:65536',
    'host:99999',
    'host:123456',
    'host:http',
    'a b:80',
    ' host:80',
    'host:80 ',
    ':80',
    '::1:443',
    '[::1]',
    '[::1]443',
    'user@host:80',
    'host/path:80',
    'http://host:80',
    '',
  ]) {
    assert.equal(parseAuthority(bad), undefined, JSON.stringify(bad));
  }
});

test(
  'parseAuthority: brackets hold only an IPv6 literal',
  () => {
    for (const bad of ['[1.2.3.4]:80', '[1:2]:80', '[::::]:80', '[1.2.3]:80']) {
      assert.equal(parseAuthority(bad), undefined, JSON.stringify(bad));
    }
  },
);
