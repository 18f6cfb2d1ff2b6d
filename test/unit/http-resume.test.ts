// The rules of a resumed download (src/inbound/http-resume.ts): which responses may be resumed,
// what the Range request carries, and which answers may be spliced in.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resumableOf, resumeHeaders, spliceRefusal } from '../../src/inbound/http-resume.js';

const etag = '"abc"';
const lm = 'Tue, 01 Dec 2026 10:00:00 GMT';

test('resumableOf: a 200 needs a length, Accept-Ranges: bytes and a strong validator', () => {
  assert.deepEqual(resumableOf(200, { 'content-length': '100', 'accept-ranges': 'bytes', etag }), {
    start: 0,
    end: 99,
    total: 100,
    length: 100,
    etag,
  });
  assert.deepEqual(resumableOf(200, { 'content-length': '100', 'accept-ranges': 'none, Bytes', 'last-modified': lm }), {
    start: 0,
    end: 99,
    total: 100,
    length: 100,
    lastModified: lm,
  });
  const no = [
    { 'content-length': '100', etag }, // no Accept-Ranges
    { 'content-length': '100', 'accept-ranges': 'none', etag },
    { 'accept-ranges': 'bytes', etag }, // no length
    { 'content-length': '100', 'transfer-encoding': 'chunked', 'accept-ranges': 'bytes', etag },
    { 'content-length': '100', 'accept-ranges': 'bytes', etag: 'W/"abc"' }, // weak
    { 'content-length': '100', 'accept-ranges': 'bytes', etag: 'W/"abc"', 'last-modified': lm }, // weak ETag wins over the date
    { 'content-length': '100', 'accept-ranges': 'bytes', etag: 'abc' }, // not a quoted ETag
    { 'content-length': '100', 'accept-ranges': 'bytes', 'last-modified': 'yesterday' },
    { 'content-length': '100', 'accept-ranges': 'bytes' }, // no validator
    { 'content-length': '0', 'accept-ranges': 'bytes', etag },
    { 'content-length': ['100', '100'], 'accept-ranges': 'bytes', etag },
  ];
  for (const h of no) assert.equal(resumableOf(200, h), undefined, JSON.stringify(h));
  for (const status of [201, 203, 204, 304, 404, 500]) {
    assert.equal(resumableOf(status, { 'content-length': '100', 'accept-ranges': 'bytes', etag }), undefined, `status ${status}`);
  }
});

test('resumableOf: a 206 of one range with its total known; its length must agree', () => {
  assert.deepEqual(resumableOf(206, { 'content-range': 'bytes 10-19/100', 'content-length': '10', etag }), {
    start: 10,
    end: 19,
    total: 100,
    length: 10,
    etag,
  });
  for (const cr of ['bytes 10-19/*', 'bytes */100', 'bytes 19-10/100', 'bytes 10-100/100', 'items 10-19/100']) {
    assert.equal(resumableOf(206, { 'content-range': cr, 'content-length': '10', etag }), undefined, cr);
  }
  assert.equal(resumableOf(206, { 'content-range': 'bytes 10-19/100', 'content-length': '11', etag }), undefined);
  // multipart/byteranges: no Content-Range on the response
  assert.equal(resumableOf(206, { 'content-length': '300', 'content-type': 'multipart/byteranges; boundary=x', etag }), undefined);
});

test('resumeHeaders: the remaining range and If-Range; the first request\'s conditions dropped', () => {
  const r = resumableOf(206, { 'content-range': 'bytes 10-19/100', 'content-length': '10', etag })!;
  const out = resumeHeaders(['Accept', '*/*', 'Range', 'bytes=10-19', 'If-None-Match', '"x"', 'if-modified-since', lm, 'host', 'h'], r, 4);
  assert.deepEqual(out, ['Accept', '*/*', 'host', 'h', 'range', 'bytes=14-19', 'if-range', etag]);
  const byDate = resumableOf(200, { 'content-length': '100', 'accept-ranges': 'bytes', 'last-modified': lm })!;
  assert.deepEqual(resumeHeaders([], byDate, 7), ['range', 'bytes=7-99', 'if-range', lm]);
});

test('spliceRefusal: only a 206 of exactly the missing bytes, same total, same validator', () => {
  const r = resumableOf(200, { 'content-length': '100', 'accept-ranges': 'bytes', etag })!;
  const ok = { 'content-range': 'bytes 40-99/100', 'content-length': '60', etag };
  assert.equal(spliceRefusal(206, ok, r, 40), undefined);
  assert.equal(spliceRefusal(206, { ...ok, 'content-length': undefined }, r, 40), undefined);
  assert.match(spliceRefusal(200, ok, r, 40)!, /status 200/);
  assert.match(spliceRefusal(206, { ...ok, 'content-range': 'bytes 0-99/100' }, r, 40)!, /content-range/);
  assert.match(spliceRefusal(206, { ...ok, 'content-range': 'bytes 40-99/101' }, r, 40)!, /content-range/);
  assert.match(spliceRefusal(206, { ...ok, 'content-range': 'bytes 40-98/100' }, r, 40)!, /content-range/);
  assert.match(spliceRefusal(206, { ...ok, 'content-range': undefined }, r, 40)!, /content-range/);
  assert.match(spliceRefusal(206, { ...ok, 'content-length': '59' }, r, 40)!, /content-length/);
  assert.match(spliceRefusal(206, { ...ok, etag: '"other"' }, r, 40)!, /etag/);
  assert.match(spliceRefusal(206, { ...ok, etag: 'W/"abc"' }, r, 40)!, /etag/);
  assert.match(spliceRefusal(206, { ...ok, etag: undefined }, r, 40)!, /etag/);
  const byDate = resumableOf(200, { 'content-length': '100', 'accept-ranges': 'bytes', 'last-modified': lm })!;
  assert.equal(spliceRefusal(206, { 'content-range': 'bytes 40-99/100', 'last-modified': lm }, byDate, 40), undefined);
  assert.match(spliceRefusal(206, { 'content-range': 'bytes 40-99/100', 'last-modified': 'Wed, 02 Dec 2026 10:00:00 GMT' }, byDate, 40)!, /last-modified/);
});
