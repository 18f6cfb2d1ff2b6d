// The bench's result table (bench/stats.ts): the ratio of medians to the ref row, and the paired
// ratio, taken round by round, that a machine drifting between rounds does not move.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pairedRatio, renderTable, type Row } from '../../bench/stats.js';

test('pairedRatio: the median of the per-round ratios and their range, over the common rounds', () => {
  // the machine halves its speed after round 2: both proxies fall, their ratio stays at 0.8
  const ref = [1000, 1000, 500, 500, 500];
  const row = [800, 800, 400, 400, 400];
  assert.deepEqual(pairedRatio(row, ref), { median: 0.8, min: 0.8, max: 0.8 });
  // a row that failed in round 3 is left out after it: the first two rounds pair
  assert.deepEqual(pairedRatio([900, 700], ref), { median: 0.8, min: 0.7, max: 0.9 });
  assert.equal(pairedRatio([900], ref), undefined, 'one round is no pairing');
  assert.equal(pairedRatio([1, 2, 3], [0, 0, 5]), undefined, 'a ref of zero gives no ratio');
});

test('renderTable: the paired column beside the ratio of medians; none for the ref or a skipped row', () => {
  const rows: Row[] = [
    { scenario: 'rate CONNECT', proxy: 'tinyproxy', samples: [3000, 3000, 1500, 1500, 1500], unit: 'flows/s', better: 'higher', ref: 'tinyproxy' },
    // slower rounds fell on the ref's high ones: the medians say 1.6x, four rounds of five say 0.8x
    { scenario: 'rate CONNECT', proxy: 'holdfast', samples: [2400, 2400, 2400, 1200, 1200], unit: 'flows/s', better: 'higher', ref: 'tinyproxy' },
    { scenario: 'rate CONNECT', proxy: 'dante', samples: [], unit: 'flows/s', better: 'higher', skipped: 'not installed' },
  ];
  const lines = renderTable(rows).split('\n');
  const head = lines[0].split('|').map((c) => c.trim());
  const cells = (proxy: string) => {
    const line = lines.find((l) => l.includes(` ${proxy} `));
    assert.ok(line, proxy);
    const c = line.split('|').map((x) => x.trim());
    return (name: string) => c[head.indexOf(name)];
  };
  assert.ok(head.includes('paired'), lines[0]);
  assert.equal(cells('tinyproxy')('vs ref'), '1 (ref)');
  assert.equal(cells('tinyproxy')('paired'), '');
  assert.equal(cells('holdfast')('vs ref'), '1.60x');
  assert.equal(cells('holdfast')('paired'), '0.800x (0.800-1.60)');
  assert.equal(cells('dante')('paired'), '-');
});

test('renderTable: with another build in the same rounds, its rows pair with it in a column of their own', () => {
  const rows: Row[] = [
    { scenario: 'rate SOCKS5', proxy: 'dante', samples: [2000, 2000, 1000], unit: 'flows/s', better: 'higher', ref: 'dante' },
    { scenario: 'rate SOCKS5', proxy: 'holdfast-base', samples: [2000, 1000, 1000], unit: 'flows/s', better: 'higher', ref: 'dante' },
    { scenario: 'rate SOCKS5', proxy: 'holdfast', samples: [2200, 1100, 1100], unit: 'flows/s', better: 'higher', ref: 'dante', base: 'holdfast-base' },
  ];
  const lines = renderTable(rows).split('\n');
  const head = lines[0].split('|').map((c) => c.trim());
  const col = head.indexOf('vs base, paired');
  assert.ok(col > 0, lines[0]);
  const cell = (proxy: string) => lines.find((l) => l.includes(` ${proxy} `))!.split('|').map((c) => c.trim())[col];
  assert.equal(cell('holdfast'), '1.10x (1.10-1.10)', 'every round 10% up on the other build');
  assert.equal(cell('holdfast-base'), '');
  // without a base anywhere, no such column
  assert.ok(!renderTable(rows.slice(0, 2)).split('\n')[0].includes('vs base'));
});
