// The addon's own edges (native/holdfast_native.c): routeSource refuses an address whose zone is
// too long instead of cutting it short, names an unknown zone, and errors carry Node's errno names
// from the one table of both C files (native/errno_name.c).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addon, needsAddon as opts } from '../helpers/addon.js';

test('13: routeSource refuses an IPv6 address with an over-long zone instead of truncating it', opts, () => {
  const a = addon();
  const long = `fe80::1%${'z'.repeat(100)}`;
  assert.throws(() => a.routeSource(6, long), (err: Error) => err instanceof TypeError && /too long/.test(err.message));
});

test('13: routeSource names a zone that is no interface (if_nametoindex), rather than dropping it', opts, () => {
  const a = addon();
  assert.throws(
    () => a.routeSource(6, 'fe80::1%nosuchif9'),
    (err: NodeJS.ErrnoException) => err.syscall === 'if_nametoindex' && /^E[A-Z]+$/.test(err.code ?? '') && err.code !== 'EUNKNOWN',
  );
});

test('routeSource answers for loopback; openBound names ENODEV for an unknown device', opts, () => {
  const a = addon();
  assert.equal(a.routeSource(4, '127.0.0.1'), '127.0.0.1');
  assert.throws(
    () => a.openBound(4, 0, 'nosuchif9'),
    (err: NodeJS.ErrnoException) => err.code === 'ENODEV' && /SO_BINDTODEVICE/.test(err.syscall ?? ''),
  );
});
