// The cache of the kernel's route choices (issue 17): an answer holds until the monitor's epoch
// moves or it grows old; errors are never kept; with no epoch nothing is cached.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cachedSourceFinder, type SourceFinder } from '../../src/net/route.js';

/** A finder that answers from a table and counts its calls (each call is one kernel probe). */
function countingFinder(answers: Map<string, string | Error>): SourceFinder & { calls: number } {
  const f = ((family: 4 | 6, ip: string) => {
    f.calls++;
    const a = answers.get(`${family} ${ip}`);
    if (a === undefined) throw Object.assign(new Error('no route'), { code: 'ENETUNREACH' });
    if (a instanceof Error) throw a;
    return a;
  }) as SourceFinder & { calls: number };
  f.calls = 0;
  return f;
}

test('an answer is reused while the epoch stays, and asked again once it moves', () => {
  const answers = new Map<string, string | Error>([['4 192.0.2.7', '10.0.0.2']]);
  const inner = countingFinder(answers);
  let epoch = 1;
  let now = 0;
  const find = cachedSourceFinder(inner, { epoch: () => epoch, now: () => now });
  assert.equal(find(4, '192.0.2.7'), '10.0.0.2');
  assert.equal(find(4, '192.0.2.7'), '10.0.0.2');
  assert.equal(inner.calls, 1, 'the second flow to the same destination skips the probe');
  // the route moves, the monitor hears an event: the next flow asks the kernel again
  answers.set('4 192.0.2.7', '10.9.0.2');
  now += 10;
  assert.equal(find(4, '192.0.2.7'), '10.0.0.2', 'no event yet: still the cached answer');
  epoch++;
  assert.equal(find(4, '192.0.2.7'), '10.9.0.2');
  assert.equal(inner.calls, 2);
});

test('an answer is asked again after maxAgeMs even without an event', () => {
  const inner = countingFinder(new Map([['6 2001:db8::7', 'fd00::2']]));
  let now = 0;
  const find = cachedSourceFinder(inner, { epoch: () => 0, now: () => now, maxAgeMs: 1000 });
  find(6, '2001:db8::7');
  now = 999;
  find(6, '2001:db8::7');
  assert.equal(inner.calls, 1);
  now = 1000;
  find(6, '2001:db8::7');
  assert.equal(inner.calls, 2);
});

test('families and addresses are separate entries; errors are never cached', () => {
  const answers = new Map<string, string | Error>([
    ['4 192.0.2.7', '10.0.0.2'],
    ['6 192.0.2.7', 'fd00::2'], // not a real IPv6 destination: only the key's family matters here
  ]);
  const inner = countingFinder(answers);
  const find = cachedSourceFinder(inner, { epoch: () => 0, now: () => 0 });
  assert.equal(find(4, '192.0.2.7'), '10.0.0.2');
  assert.equal(find(6, '192.0.2.7'), 'fd00::2');
  assert.throws(() => find(4, '198.51.100.1'), /no route/);
  answers.set('4 198.51.100.1', '10.0.0.2'); // a route appears
  assert.equal(find(4, '198.51.100.1'), '10.0.0.2', 'the failure was not remembered');
  assert.equal(inner.calls, 4);
});

test('without an epoch (nothing watched) every call asks the kernel', () => {
  const inner = countingFinder(new Map([['4 192.0.2.7', '10.0.0.2']]));
  const find = cachedSourceFinder(inner, { epoch: () => undefined });
  find(4, '192.0.2.7');
  find(4, '192.0.2.7');
  assert.equal(inner.calls, 2);
});

test('the cache is bounded: past maxEntries it starts over', () => {
  const answers = new Map<string, string | Error>();
  for (let i = 0; i < 10; i++) answers.set(`4 192.0.2.${i}`, '10.0.0.2');
  const inner = countingFinder(answers);
  const find = cachedSourceFinder(inner, { epoch: () => 0, now: () => 0, maxEntries: 4 });
  for (let i = 0; i < 4; i++) find(4, `192.0.2.${i}`);
  find(4, '192.0.2.0');
  assert.equal(inner.calls, 4, 'four entries fit');
  find(4, '192.0.2.9'); // the fifth: the cache starts over with it
  find(4, '192.0.2.0');
  assert.equal(inner.calls, 6);
});

test('an asynchronous answer is kept only if no event came while it was asked', async () => {
  let epoch = 0;
  let calls = 0;
  const inner: SourceFinder = () => {
    calls++;
    return new Promise((r) => setImmediate(() => r('10.0.0.2')));
  };
  const find = cachedSourceFinder(inner, { epoch: () => epoch, now: () => 0 });
  const first = find(4, '192.0.2.7');
  epoch++; // an event while the probe runs
  assert.equal(await first, '10.0.0.2');
  await find(4, '192.0.2.7');
  assert.equal(calls, 2, 'the answer learned across an event was not kept');
  assert.equal(await find(4, '192.0.2.7'), '10.0.0.2');
  assert.equal(calls, 2, 'an answer learned in one epoch is kept');
});
