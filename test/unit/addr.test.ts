// The address-text helpers every part shares (src/net/addr.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isLinkLocal, isLoopbackIp, stripZone, unmap } from '../../src/net/addr.js';

test('stripZone drops an IPv6 zone id and leaves anything else alone', () => {
  assert.equal(stripZone('fe80::1%eth0'), 'fe80::1');
  assert.equal(stripZone('fe80::1%'), 'fe80::1');
  assert.equal(stripZone('10.1.1.2'), '10.1.1.2');
  assert.equal(stripZone('fd01:1::2'), 'fd01:1::2');
});

test('isLinkLocal: fe80::/10 and 169.254/16, with a prefix length or a zone', () => {
  for (const ip of ['fe80::1', 'FE80::1', 'fe9f::1', 'feaa::1', 'febf::1', 'fe80::1%eth0', 'fe80::1/64', '169.254.1.2', '169.254.0.0/16']) {
    assert.equal(isLinkLocal(ip), true, ip);
  }
  for (const ip of ['fec0::1', 'fe7f::1', 'fd01:1::2', '10.1.1.2', '169.25.1.1', '1.169.254.1', '::1']) {
    assert.equal(isLinkLocal(ip), false, ip);
  }
});

test('unmap: an IPv4-mapped IPv6 address becomes its IPv4 address; nothing else changes', () => {
  assert.equal(unmap('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(unmap('::FFFF:10.1.2.3'), '10.1.2.3');
  assert.equal(unmap('::1'), '::1');
  assert.equal(unmap('::ffff:7f00:1'), '::ffff:7f00:1');
  assert.equal(unmap('10.1.2.3'), '10.1.2.3');
  assert.equal(unmap('fd01::ffff:1.2.3.4'), 'fd01::ffff:1.2.3.4');
});

test('isLoopbackIp: 127/8, ::1 and mapped 127/8', () => {
  for (const ip of ['127.0.0.1', '127.5.6.7', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopbackIp(ip), true, ip);
  for (const ip of ['10.0.0.1', '::', '0.0.0.0', '::ffff:10.0.0.1', '128.0.0.1', 'localhost']) assert.equal(isLoopbackIp(ip), false, ip);
});
