// Issue 11: running out of fds is counted every time and logged once per burst (a burst ends
// after `quietMs` without one), whatever depth of `cause` the EMFILE/ENFILE hides at.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { fdExhaustionCode, watchFdExhaustion } from '../../src/inbound/fd-exhaustion.js';
import { LogSink } from '../helpers/proxy.js';

test('11: fd exhaustion: counted each time, one log line per burst, found in the cause chain', () => {
  const logs = new LogSink();
  const counters = { fdExhausted: 0 };
  let now = 1000;
  const seen = watchFdExhaustion(pino({ level: 'info' }, logs), counters, 10_000, () => now);
  const emfile = new Error('dial failed', { cause: new Error('route', { cause: { code: 'EMFILE' } }) });
  assert.equal(fdExhaustionCode(emfile), 'EMFILE');
  assert.equal(fdExhaustionCode({ code: 'ENFILE' }), 'ENFILE');
  assert.equal(fdExhaustionCode(new Error('x', { cause: { code: 'ECONNREFUSED' } })), undefined);
  assert.equal(seen(new Error('refused'), 'dial'), false);
  for (let i = 0; i < 50; i++) {
    assert.equal(seen(emfile, 'dial'), true);
    now += 100; // a burst: 100 ms apart
  }
  assert.equal(counters.fdExhausted, 50);
  assert.equal(logs.byMsg('out of file descriptors').length, 1);
  now += 10_000; // quiet long enough: the next one starts a new burst
  seen({ code: 'ENFILE' }, 'accept');
  const lines = logs.byMsg('out of file descriptors');
  assert.equal(lines.length, 2);
  assert.deepEqual([lines[1].code, lines[1].where, lines[1].fdExhausted], ['ENFILE', 'accept', 51]);
});
