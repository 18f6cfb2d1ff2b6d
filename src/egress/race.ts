// A staggered race (RFC 8305 style): start the first attempt; start the next one when the
// previous fails, or after `delayMs` without an answer; the first success wins, the others are
// aborted, and a success that arrives late is disposed of. Used across interfaces (the dialer's
// fallback) and across address families (Happy Eyeballs).
import type { CancelSignal } from '../contracts.js';

export interface RaceOptions<I, R> {
  readonly delayMs: number;
  readonly signal?: CancelSignal;
  /** After `item` failed with `err`: keep racing (true), or end the race with this error (false). */
  readonly goOn: (err: unknown, item: I) => boolean;
  readonly onFailed?: (item: I, err: unknown) => void;
  /** An attempt still silent when another won (it is aborted right after). */
  readonly onStalled?: (item: I, winner: I) => void;
  /** Dispose of a result that arrived after the race was decided. */
  readonly dispose: (value: R) => void;
}

export interface RaceWin<I, R> {
  readonly value: R;
  readonly item: I;
  readonly failures: readonly { readonly item: I; readonly err: unknown }[];
}

export class RaceLost<I> extends Error {
  constructor(
    readonly failures: readonly { readonly item: I; readonly err: unknown }[],
    readonly last: unknown,
  ) {
    super('every attempt failed');
  }
}

export function staggeredRace<I, R>(
  items: readonly I[],
  attempt: (item: I, signal: AbortSignal) => Promise<R>,
  o: RaceOptions<I, R>,
): Promise<RaceWin<I, R>> {
  return new Promise((resolve, reject) => {
    const running: { item: I; ac: AbortController; settled: boolean }[] = [];
    const failures: { item: I; err: unknown }[] = [];
    let next = 0;
    let pending = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;

    const finish = (win: { value: R; item: I } | undefined, err?: unknown) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      for (const r of running) {
        if (r.settled) continue;
        if (win) o.onStalled?.(r.item, win.item);
        r.ac.abort(new Error('lost the race'));
      }
      if (win) resolve({ ...win, failures });
      else reject(new RaceLost(failures, err));
    };
    const onAbort = () => finish(undefined, o.signal?.reason ?? new Error('aborted'));

    const start = () => {
      if (done || next >= items.length) return;
      const item = items[next++];
      const run = { item, ac: new AbortController(), settled: false };
      running.push(run);
      pending++;
      if (timer) clearTimeout(timer);
      timer = next < items.length ? setTimeout(start, o.delayMs) : undefined;
      attempt(item, run.ac.signal).then(
        (value) => {
          pending--;
          run.settled = true;
          if (done) o.dispose(value);
          else finish({ value, item });
        },
        (err: unknown) => {
          pending--;
          run.settled = true;
          if (done) return;
          failures.push({ item, err });
          o.onFailed?.(item, err);
          if (!o.goOn(err, item)) finish(undefined, err);
          else if (next < items.length) start();
          else if (pending === 0) finish(undefined, err);
        },
      );
    };

    if (items.length === 0) return finish(undefined, new Error('nothing to try'));
    if (o.signal?.aborted) return onAbort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    start();
  });
}
