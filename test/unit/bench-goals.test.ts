// Issue 17's goals as the bench prints them (bench/goals.ts): each read from the run's own rows,
// by the medians and paired by round, with node-floor's ratio beside holdfast's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GOALS, meets, readGoals, renderGoals } from '../../bench/goals.js';
import type { Row } from '../../bench/stats.js';

const rate = (proxy: string, samples: number[], cpu: number[], scenario = 'rate SOCKS5'): Row => ({
  scenario,
  proxy,
  samples,
  cpu,
  unit: 'flows/s',
  better: 'higher',
});
const lat = (scenario: string, proxy: string, samples: number[]): Row => ({ scenario, proxy, samples, unit: 'µs', better: 'lower' });

test('readGoals: a cost goal reads the per-round CPU, a rate goal the figure; node-floor beside holdfast', () => {
  const rows: Row[] = [
    rate('dante', [2000, 2000, 2000], [500, 500, 500]),
    rate('microsocks', [3000, 3000, 3000], [200, 200, 200]),
    rate('node-floor', [2400, 2400, 2400], [300, 300, 300]),
    rate('holdfast', [2200, 2200, 2200], [400, 400, 400]),
  ];
  const got = new Map(readGoals(rows).map((r) => [r.goal.name, r]));
  const flows = got.get("SOCKS5 flows/s ≥ Dante's")!;
  assert.equal(flows.byMedians, 1.1);
  assert.deepEqual(flows.paired, { median: 1.1, min: 1.1, max: 1.1 });
  assert.equal(flows.floorByMedians, 1.2);
  assert.equal(meets(flows.goal, flows.byMedians), true);
  const cpu = got.get("SOCKS5 CPU per flow ≤ Dante's")!;
  assert.equal(cpu.byMedians, 0.8);
  assert.equal(meets(cpu.goal, cpu.byMedians), true);
  const moon = got.get("moonshot: SOCKS5 CPU per flow ≤ 1.5x microsocks's")!;
  assert.equal(moon.byMedians, 2);
  assert.equal(meets(moon.goal, moon.byMedians), false);
  assert.equal(moon.floorByMedians, 1.5);
  assert.equal(meets(moon.goal, moon.floorByMedians!), true, 'a bar is met at equality');
  const yard = got.get("(no bar) SOCKS5 CPU per flow over node-floor's")!;
  assert.ok(Math.abs(yard.byMedians - 4 / 3) < 1e-12);
  assert.equal(meets(yard.goal, yard.byMedians), undefined);
  // no latency, CONNECT or forward rows in this run: those goals are left out, not guessed
  assert.equal(got.size, 4);
  assert.ok(!got.has("CONNECT flows/s ≥ 0.8x tinyproxy's"));
});

test('readGoals: on a machine that drifts between rounds, the paired verdict can differ from the medians\'', () => {
  // holdfast at 0.85x of tinyproxy in every round: with both medians from the same round, the
  // medians say so too
  const rows: Row[] = [
    rate('tinyproxy', [3000, 2000, 1000], [250, 250, 250], 'rate HTTP CONNECT'),
    rate('holdfast', [2550, 1700, 850], [400, 400, 400], 'rate HTTP CONNECT'),
  ];
  const r = readGoals(rows).find((x) => x.goal.name === "CONNECT flows/s ≥ 0.8x tinyproxy's")!;
  assert.equal(r.byMedians, 0.85);
  // 0.85x in two rounds of three, but tinyproxy's median now comes from a fast round and
  // holdfast's from a slow one: by the medians holdfast is at 0.28x, paired at 0.85x
  const skew: Row[] = [
    rate('tinyproxy', [3000, 3000, 1000], [250, 250, 250], 'rate HTTP CONNECT'),
    rate('holdfast', [2550, 850, 850], [400, 400, 400], 'rate HTTP CONNECT'),
  ];
  const s = readGoals(skew).find((x) => x.goal.name === "CONNECT flows/s ≥ 0.8x tinyproxy's")!;
  assert.ok(Math.abs(s.byMedians - 850 / 3000) < 1e-12);
  assert.equal(meets(s.goal, s.byMedians), false);
  assert.equal(s.paired!.median, 0.85);
  assert.equal(meets(s.goal, s.paired!.median), true);
  // node-floor has no row here: no column, not a zero
  assert.equal(s.floorByMedians, undefined);
});

test('readGoals: a skipped peer or a row without its CPU leaves the goal out', () => {
  const rows: Row[] = [
    { scenario: 'rate SOCKS5', proxy: 'dante', samples: [], unit: 'flows/s', better: 'higher', skipped: 'sockd missing' },
    { scenario: 'rate SOCKS5', proxy: 'microsocks', samples: [3000, 3000], unit: 'flows/s', better: 'higher' },
    rate('holdfast', [2000, 2000], [400, 400]),
  ];
  const names = readGoals(rows).map((r) => r.goal.name);
  assert.ok(!names.some((n) => n.includes('Dante')), 'Dante was skipped');
  assert.ok(!names.some((n) => n.startsWith('moonshot')), "microsocks's row has no CPU figures");
  assert.equal(renderGoals([]), '');
});

test('renderGoals: one line per goal measured, with its verdict both ways and node-floor beside it', () => {
  const rows: Row[] = [
    lat('latency new flow p50 HTTP CONNECT', 'tinyproxy', [300, 300, 300]),
    lat('latency new flow p50 HTTP CONNECT', 'node-floor', [330, 330, 330]),
    lat('latency new flow p50 HTTP CONNECT', 'holdfast', [400, 400, 400]),
  ];
  const lines = renderGoals(rows).split('\n');
  assert.equal(lines.length, 3, 'a header, its rule and the one goal measured');
  assert.match(lines[0], /goal.*holdfast, by medians.*holdfast, paired.*node-floor/);
  const cells = lines[2].split('|').slice(1, -1).map((c) => c.trim());
  assert.deepEqual(cells, ["CONNECT new-flow p50 ≤ 1.25x tinyproxy's", '1.33x MISSED', '1.33x (1.33-1.33) MISSED', '1.10x met; 1.10x']);
  // every goal of the issue is in the list, and each names a peer and a bar or none
  assert.equal(GOALS.filter((g) => g.atMost !== undefined || g.atLeast !== undefined).length, 9);
});
