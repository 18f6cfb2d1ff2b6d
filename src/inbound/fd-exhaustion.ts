// Out of file descriptors (EMFILE: this process's limit; ENFILE: the system's). Every accept or
// dial that fails for it is counted (fdExhausted in /status, holdfast_refusals_total in
// /metrics); the log gets one line per burst (the first failure after a quiet spell), not one
// per failure: a flood of accept errors would otherwise fill the disk while the host suffers.
import type { Logger } from 'pino';
import type { InboundCounters } from './context.js';

/** EMFILE or ENFILE, on the error or anywhere in its cause chain; else undefined. */
export function fdExhaustionCode(err: unknown): 'EMFILE' | 'ENFILE' | undefined {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === 'EMFILE' || code === 'ENFILE') return code;
  }
  return undefined;
}

export interface FdExhaustion {
  /** Count and (once per burst) log `err` if it is fd exhaustion; true if it was. */
  (err: unknown, where: 'accept' | 'dial'): boolean;
}

export function watchFdExhaustion(
  log: Logger,
  counters: Pick<InboundCounters, 'fdExhausted'>,
  quietMs = 10_000,
  now: () => number = Date.now,
): FdExhaustion {
  let lastSeen = -Infinity;
  return (err, where) => {
    const code = fdExhaustionCode(err);
    if (!code) return false;
    counters.fdExhausted++;
    const t = now();
    if (t - lastSeen >= quietMs) {
      log.error(
        { code, where, fdExhausted: counters.fdExhausted, hint: 'connections fail until some close; raise the limit (ulimit -n, LimitNOFILE=)' },
        'out of file descriptors',
      );
    }
    lastSeen = t;
    return true;
  };
}
