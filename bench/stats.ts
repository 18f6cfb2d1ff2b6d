// Small numeric helpers and the result table. No I/O besides building strings.

export type Better = 'higher' | 'lower';

/** One measured figure: the median over rounds of a scenario for one proxy. */
export interface Row {
  scenario: string;
  proxy: string;
  /** Values, one per round (already reduced within a round, e.g. a round's p99). */
  samples: number[];
  unit: string;
  better: Better;
  /** The proxy this row is compared with (same scenario); absent: no ratio. */
  ref?: string;
  /**
   * Another build of the same proxy in the same rounds (holdfast-base): the row's paired ratio to
   * it gets a column of its own, the before/after of a change.
   */
  base?: string;
  /**
   * The proxy's CPU cost, one value per round like `samples` (rate: µs per flow; bulk: s per
   * GiB): for the goals that compare costs (bench/goals.ts). The note shows its median.
   */
  cpu?: number[];
  /** Free text for the last column (CPU cost, errors, why skipped). */
  note?: string;
  /** Set when the proxy could not be measured: the row prints the reason. */
  skipped?: string;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile, p in [0, 100]. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const rank = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
  return sorted[rank];
}

export function sortedCopy(xs: ArrayLike<number>): Float64Array {
  return Float64Array.from(xs).sort();
}

/** (max - min) / median over the rounds, as a percentage: how much the rounds disagree. */
export function spreadPct(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = median(xs);
  return m === 0 ? 0 : ((Math.max(...xs) - Math.min(...xs)) / m) * 100;
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toString();
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
}

/**
 * A row's figure over its ref's, round by round: the median of those ratios and their range, over
 * the rounds both were measured in. Every scenario keeps a row's samples in round order, and a
 * case that fails is left out of the rounds after (bench/common.ts `interleaved`, latency's
 * `failed`), so two rows' samples share their first rounds. Undefined under two common rounds.
 *
 * Both were measured minutes apart at most, in the same round: a machine that slows down or
 * speeds up between rounds (a VM's neighbours) moves both, and the ratio keeps still where the
 * ratio of the two medians, taken from different rounds, does not.
 */
export function pairedRatio(row: readonly number[], ref: readonly number[]): Paired | undefined {
  const n = Math.min(row.length, ref.length);
  const ratios: number[] = [];
  for (let i = 0; i < n; i++) if (ref[i] !== 0) ratios.push(row[i] / ref[i]);
  if (ratios.length < 2) return undefined;
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) };
}

/** pairedRatio's answer: the median of the per-round ratios and their range. */
export interface Paired {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** A paired ratio as both tables print it: `0.85x (0.80-0.90)`. */
export function fmtPaired(p: Paired): string {
  return `${fmt(p.median)}x (${fmt(p.min)}-${fmt(p.max)})`;
}

/** A Markdown table (readable in a terminal, pasteable into bench/README.md). */
export function renderTable(rows: readonly Row[]): string {
  const withBase = rows.some((r) => r.base !== undefined);
  const head = ['scenario', 'proxy', 'median', 'unit', 'vs ref', 'paired', ...(withBase ? ['vs base, paired'] : []), 'spread', 'note'];
  const pairedText = (row: readonly number[], ref: readonly number[]): string => {
    const p = pairedRatio(row, ref);
    return p === undefined ? '' : fmtPaired(p);
  };
  const find = (scenario: string, proxy: string | undefined): Row | undefined =>
    proxy === undefined ? undefined : rows.find((x) => x.scenario === scenario && x.proxy === proxy && x.skipped === undefined);
  const body = rows.map((r) => {
    if (r.skipped !== undefined) return [r.scenario, r.proxy, '-', r.unit, '-', '-', ...(withBase ? ['-'] : []), '-', `skipped: ${r.skipped}`];
    const m = median(r.samples);
    let ratio = '';
    let paired = '';
    if (r.ref !== undefined) {
      const ref = find(r.scenario, r.ref);
      if (ref === undefined) ratio = 'n/a';
      else if (ref === r) ratio = '1 (ref)';
      else {
        ratio = `${fmt(m / median(ref.samples))}x`;
        paired = pairedText(r.samples, ref.samples);
      }
    }
    const base = find(r.scenario, r.base);
    const arrow = r.better === 'higher' ? '↑' : '↓';
    return [
      r.scenario,
      r.proxy,
      fmt(m),
      `${r.unit} ${arrow}`,
      ratio,
      paired,
      ...(withBase ? [base === undefined ? '' : pairedText(r.samples, base.samples)] : []),
      `${r.samples.length}× ±${spreadPct(r.samples).toFixed(0)}%`,
      r.note ?? '',
    ];
  });
  return markdownTable(head, body);
}

/** Cells padded to their column's width, a header and its rule first. */
export function markdownTable(head: readonly string[], body: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: readonly string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}
