// A flow's way to call off its dial: the part of AbortSignal the dial path listens to (aborted,
// reason, 'abort' listeners), without what an AbortController brings per flow (an EventTarget
// with its Map, a record per listener). Any AbortSignal is a CancelSignal too: a race gives its
// attempts real ones.
import type { CancelListener, CancelSignal } from './contracts.js';

function call(l: CancelListener): void {
  if (typeof l === 'function') l();
  else l.handleEvent();
}

export class Cancel implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  /** one listener (the common case: the dial), or several (a race) */
  #listeners: CancelListener | CancelListener[] | undefined = undefined;

  /**
   * As on an AbortSignal: each listener (a function, or an object's handleEvent) runs at most
   * once; one added after the abort never runs.
   */
  addEventListener(_type: 'abort', fn: CancelListener, _options?: { once?: boolean }): void {
    if (this.aborted) return;
    const l = this.#listeners;
    if (l === undefined) this.#listeners = fn;
    else if (!Array.isArray(l)) {
      if (l !== fn) this.#listeners = [l, fn];
    } else if (!l.includes(fn)) l.push(fn);
  }

  removeEventListener(_type: 'abort', fn: CancelListener): void {
    const l = this.#listeners;
    if (l === fn) this.#listeners = undefined;
    else if (Array.isArray(l)) {
      const i = l.indexOf(fn);
      if (i >= 0) l.splice(i, 1);
    }
  }

  /** Call it off (once): `reason` is what the listeners read. */
  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const l = this.#listeners;
    this.#listeners = undefined;
    if (Array.isArray(l)) for (const fn of l) call(fn);
    else if (l !== undefined) call(l);
  }
}
