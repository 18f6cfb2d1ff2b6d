// Issue 17's goals, read from one run's rows: each goal's ratio by the medians and paired by round
// (bench/stats.ts), its verdict both ways, and the bare Node relay's (`node-floor`) ratio in the
// same run where it speaks the protocol: what Node itself reached on this machine at that moment.
// Pure: rows in, a Markdown table out, so the verdicts quoted in bench/README.md are what
// `npm run bench` printed, not a reading by hand.
import { fmt, fmtPaired, markdownTable, median, pairedRatio, type Paired, type Row } from './stats.js';

/** What a goal compares: the row's own figure, or its cost in CPU (Row.cpu). */
type Figure = 'figure' | 'cpu';

export interface Goal {
  readonly name: string;
  readonly scenario: string;
  readonly figure: Figure;
  /** the proxy holdfast is measured against */
  readonly ref: string;
  /** holdfast's figure over ref's must be at most this (costs, times) ... */
  readonly atMost?: number;
  /** ... or at least this (rates); neither: a yardstick with no bar */
  readonly atLeast?: number;
  /** node-floor speaks the protocol: its own ratio to ref is shown beside holdfast's */
  readonly floor: boolean;
}

/** The goals of issue 17, as its text states them, then two yardsticks against `node-floor`. */
export const GOALS: readonly Goal[] = [
  { name: "SOCKS5 flows/s ≥ Dante's", scenario: 'rate SOCKS5', figure: 'figure', ref: 'dante', atLeast: 1, floor: true },
  { name: "SOCKS5 CPU per flow ≤ Dante's", scenario: 'rate SOCKS5', figure: 'cpu', ref: 'dante', atMost: 1, floor: true },
  { name: "SOCKS5 new-flow p50 ≤ Dante's", scenario: 'latency new flow p50 SOCKS5', figure: 'figure', ref: 'dante', atMost: 1, floor: true },
  { name: "SOCKS5 new-flow p99 ≤ Dante's", scenario: 'latency new flow p99 SOCKS5', figure: 'figure', ref: 'dante', atMost: 1, floor: true },
  { name: "moonshot: SOCKS5 CPU per flow ≤ 1.5x microsocks's", scenario: 'rate SOCKS5', figure: 'cpu', ref: 'microsocks', atMost: 1.5, floor: true },
  { name: "CONNECT new-flow p50 ≤ 1.25x tinyproxy's", scenario: 'latency new flow p50 HTTP CONNECT', figure: 'figure', ref: 'tinyproxy', atMost: 1.25, floor: true },
  { name: "CONNECT flows/s ≥ 0.8x tinyproxy's", scenario: 'rate HTTP CONNECT', figure: 'figure', ref: 'tinyproxy', atLeast: 0.8, floor: true },
  { name: "forward MiB/s ≥ 1.5x tinyproxy's", scenario: 'bulk HTTP forward', figure: 'figure', ref: 'tinyproxy', atLeast: 1.5, floor: false },
  { name: "forward CPU per GiB ≤ tinyproxy's", scenario: 'bulk HTTP forward', figure: 'cpu', ref: 'tinyproxy', atMost: 1, floor: false },
  { name: "(no bar) SOCKS5 CPU per flow over node-floor's", scenario: 'rate SOCKS5', figure: 'cpu', ref: 'node-floor', floor: false },
  { name: "(no bar) CONNECT CPU per flow over node-floor's", scenario: 'rate HTTP CONNECT', figure: 'cpu', ref: 'node-floor', floor: false },
];

/** The per-round values a goal reads from a row, or undefined if the row has none. */
function valuesOf(row: Row | undefined, figure: Figure): readonly number[] | undefined {
  if (row === undefined || row.skipped !== undefined) return undefined;
  const xs = figure === 'cpu' ? row.cpu : row.samples;
  return xs !== undefined && xs.length > 0 ? xs : undefined;
}

export interface GoalReading {
  readonly goal: Goal;
  /** holdfast's median over ref's median */
  readonly byMedians: number;
  /** per-round ratios; undefined under two common rounds */
  readonly paired: Paired | undefined;
  /** node-floor's median over ref's median, where it speaks the protocol and was measured */
  readonly floorByMedians: number | undefined;
  readonly floorPaired: Paired | undefined;
}

/** Whether a ratio meets a goal's bar; undefined for a yardstick with no bar. */
export function meets(goal: Goal, ratio: number): boolean | undefined {
  if (goal.atMost !== undefined) return ratio <= goal.atMost;
  if (goal.atLeast !== undefined) return ratio >= goal.atLeast;
  return undefined;
}

/** Every goal whose rows this run has (holdfast's and ref's, both measured). */
export function readGoals(rows: readonly Row[], proxy = 'holdfast'): GoalReading[] {
  const find = (scenario: string, p: string): Row | undefined => rows.find((r) => r.scenario === scenario && r.proxy === p);
  const out: GoalReading[] = [];
  for (const goal of GOALS) {
    const mine = valuesOf(find(goal.scenario, proxy), goal.figure);
    const ref = valuesOf(find(goal.scenario, goal.ref), goal.figure);
    if (mine === undefined || ref === undefined) continue;
    const floor = goal.floor ? valuesOf(find(goal.scenario, 'node-floor'), goal.figure) : undefined;
    out.push({
      goal,
      byMedians: median(mine) / median(ref),
      paired: pairedRatio(mine, ref),
      floorByMedians: floor === undefined ? undefined : median(floor) / median(ref),
      floorPaired: floor === undefined ? undefined : pairedRatio(floor, ref),
    });
  }
  return out;
}

/** The goals as a Markdown table; '' when the run measured none of them. */
export function renderGoals(rows: readonly Row[]): string {
  const readings = readGoals(rows);
  if (readings.length === 0) return '';
  const verdict = (goal: Goal, ratio: number): string => {
    const ok = meets(goal, ratio);
    return ok === undefined ? '' : ok ? ' met' : ' MISSED';
  };
  const head = ['goal', 'holdfast, by medians', 'holdfast, paired', 'node-floor, by medians; paired'];
  const body = readings.map((r) => [
    r.goal.name,
    `${fmt(r.byMedians)}x${verdict(r.goal, r.byMedians)}`,
    r.paired === undefined ? '' : `${fmtPaired(r.paired)}${verdict(r.goal, r.paired.median)}`,
    r.floorByMedians === undefined
      ? ''
      : `${fmt(r.floorByMedians)}x${verdict(r.goal, r.floorByMedians)}${r.floorPaired === undefined ? '' : `; ${fmt(r.floorPaired.median)}x`}`,
  ]);
  return markdownTable(head, body);
}
