// Per-interface throughput over the last few minutes: a ring of one slot per sample, a series
// per interface (NaN where the interface did not exist: a gap in the chart).

export interface HistorySeries {
  readonly name: string;
  readonly index: number;
  /** bytes per second, oldest first; null where the interface did not exist */
  readonly down: (number | null)[];
  readonly up: (number | null)[];
}

export interface HistoryJson {
  /** sample times in seconds since the epoch, oldest first */
  readonly t: number[];
  readonly series: HistorySeries[];
}

/** One sample's figures per interface. */
export type IfRates = Record<string, { readonly index: number; readonly down: number; readonly up: number }>;

interface Series {
  readonly name: string;
  index: number;
  readonly down: Float64Array;
  readonly up: Float64Array;
  /** samples since this series last had a value (drop it after a full ring of nothing) */
  idle: number;
}

export class History {
  readonly #cap: number;
  readonly #times: Float64Array;
  #head = 0;
  #size = 0;
  readonly #series = new Map<string, Series>();

  constructor(cap: number) {
    this.#cap = cap;
    this.#times = new Float64Array(cap);
  }

  /**
   * Record one sample at `tSeconds`: every interface in `present` (name -> index) gets a value
   * (its rate, else 0), an interface that is not present but moved bytes too (it carries flows
   * but went away), the others a gap. Returns the values recorded.
   */
  record(tSeconds: number, present: ReadonlyMap<string, number>, rates: ReadonlyMap<string, { up: number; down: number }>): IfRates {
    for (const name of rates.keys()) {
      if (!present.has(name) && !this.#series.has(name)) this.#add(name, Number.MAX_SAFE_INTEGER);
    }
    for (const [name, index] of present) {
      const s = this.#series.get(name);
      if (!s) this.#add(name, index);
      else s.index = index;
    }
    const slot = this.#head;
    this.#times[slot] = tSeconds;
    const ifs: Record<string, { index: number; down: number; up: number }> = {};
    for (const [name, s] of this.#series) {
      const r = rates.get(name);
      if (present.has(name) || (r && (r.up > 0 || r.down > 0))) {
        s.down[slot] = r?.down ?? 0;
        s.up[slot] = r?.up ?? 0;
        s.idle = 0;
        ifs[name] = { index: s.index, down: s.down[slot], up: s.up[slot] };
      } else {
        s.down[slot] = NaN;
        s.up[slot] = NaN;
        if (++s.idle >= this.#cap) this.#series.delete(name);
      }
    }
    this.#head = (this.#head + 1) % this.#cap;
    if (this.#size < this.#cap) this.#size++;
    return ifs;
  }

  /** Every series, oldest sample first, ordered by interface index. */
  toJSON(): HistoryJson {
    const t: number[] = [];
    const start = (this.#head - this.#size + this.#cap) % this.#cap;
    for (let k = 0; k < this.#size; k++) t.push(this.#times[(start + k) % this.#cap]);
    const series: HistorySeries[] = [];
    for (const s of this.#series.values()) {
      const down: (number | null)[] = [];
      const up: (number | null)[] = [];
      for (let k = 0; k < this.#size; k++) {
        const i = (start + k) % this.#cap;
        down.push(Number.isNaN(s.down[i]) ? null : s.down[i]);
        up.push(Number.isNaN(s.up[i]) ? null : s.up[i]);
      }
      series.push({ name: s.name, index: s.index, down, up });
    }
    series.sort((a, b) => a.index - b.index);
    return { t, series };
  }

  #add(name: string, index: number): void {
    const down = new Float64Array(this.#cap).fill(NaN);
    const up = new Float64Array(this.#cap).fill(NaN);
    this.#series.set(name, { name, index, down, up, idle: 0 });
  }
}
