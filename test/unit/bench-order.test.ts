// The bench's round order (bench/common.ts roundOrder): the rows of a Williams design. Over a full
// period each case runs once in every place per square, and right after every other case equally
// often, so neither the place nor the predecessor favours one contender (issue 17, thirteenth pass).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { roundOrder } from '../../bench/common.js';

test('bench round order: every row a permutation; each case in each place, and after each other case, equally often', () => {
  assert.deepEqual(roundOrder([], 3), []);
  for (let n = 1; n <= 9; n++) {
    const cases = Array.from({ length: n }, (_, i) => `c${i}`);
    const period = n % 2 === 0 ? n : 2 * n;
    const inPlace = new Map<string, number>();
    const after = new Map<string, number>();
    for (let r = 0; r < period; r++) {
      const row = roundOrder(cases, r);
      assert.deepEqual([...row].sort(), [...cases].sort(), `n=${n} round ${r}: a permutation`);
      assert.deepEqual(roundOrder(cases, r + period), row, `n=${n}: the rows repeat with the period`);
      row.forEach((c, place) => inPlace.set(`${c}@${place}`, (inPlace.get(`${c}@${place}`) ?? 0) + 1));
      for (let j = 1; j < n; j++) after.set(`${row[j - 1]}>${row[j]}`, (after.get(`${row[j - 1]}>${row[j]}`) ?? 0) + 1);
    }
    const times = period / n;
    for (const c of cases) for (let p = 0; p < n; p++) assert.equal(inPlace.get(`${c}@${p}`), times, `n=${n}: ${c} in place ${p}`);
    for (const a of cases) {
      for (const b of cases) {
        if (a !== b) assert.equal(after.get(`${a}>${b}`), times, `n=${n}: ${b} right after ${a}`);
      }
    }
  }
});
