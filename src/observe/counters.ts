// The monotonic counters /metrics shows, kept from the flow table's own change feed: flows opened
// and closed, cuts, fallbacks, affinity placements, dial errors, and the bytes of ended flows per
// interface. One table, one set of counters: exact whatever else runs in the process.
import type { CloseReason } from '../contracts.js';
import type { Flow, FlowEvent } from '../flows.js';

/** Monotonic counters for /metrics (label key -> count). */
export interface StatsCounters {
  /** flows begun, by kind (a flow that never pinned counts when it ends) */
  readonly flowsOpened: ReadonlyMap<string, number>;
  /** flows ended, by "kind|reason" */
  readonly flowsClosed: ReadonlyMap<string, number>;
  /** flows cut because their interface was lost, by "interface|why" */
  readonly cuts: ReadonlyMap<string, number>;
  /** MPTCP flows moved off a lost interface instead of cut, by the interface they moved to */
  readonly moves: ReadonlyMap<string, number>;
  readonly fallbacks: ReadonlyMap<string, number>;
  readonly affinity: ReadonlyMap<string, number>;
  /** flows whose dial failed, by HF_* code */
  readonly dialErrors: ReadonlyMap<string, number>;
  readonly routeChanges: number;
  readonly netChanges: number;
}

/** Flow end reasons used as metric labels (Flow.end's vocabulary, CloseReason); anything else is folded. */
const REASONS = new Set<string>([
  'done', 'client left', 'upstream left', 'reset', 'idle', 'shutdown', 'cut', 'dial failed', 'timeout', 'upstream error', 'failed',
] satisfies CloseReason[]);

export function reasonLabel(reason: string | null): string {
  if (!reason) return 'unknown';
  if (REASONS.has(reason) || /^(E[A-Z0-9_]+|HF_[A-Z_]+)$/.test(reason)) return reason;
  return 'error';
}

function bump(m: Map<string, number>, key: string, by = 1): void {
  m.set(key, (m.get(key) ?? 0) + by);
}

interface FlowSeen {
  fallback: boolean;
  affinity: boolean;
}

export class FlowCounters implements StatsCounters {
  readonly flowsOpened = new Map<string, number>();
  readonly flowsClosed = new Map<string, number>();
  readonly cuts = new Map<string, number>();
  readonly fallbacks = new Map<string, number>();
  readonly affinity = new Map<string, number>();
  readonly dialErrors = new Map<string, number>();
  /** MPTCP flows moved off a lost interface, by the interface they moved to */
  readonly moves = new Map<string, number>();
  routeChanges = 0;
  netChanges = 0;
  /** bytes of flows that have ended, per interface */
  readonly closedBytes = new Map<string, { up: number; down: number }>();
  readonly #seen = new WeakMap<Flow, FlowSeen>();

  /**
   * Count one event of the flow table. Returns what is worth a line in the feed (a fallback),
   * if anything.
   */
  count(e: FlowEvent): { fallback: Flow } | undefined {
    if (e.type === 'cut') {
      bump(this.cuts, `${e.egress}|${e.why}`, e.flows);
      return undefined;
    }
    if (e.type === 'moved') {
      bump(this.moves, e.to);
      return undefined;
    }
    const f = e.flow;
    let seen = this.#seen.get(f);
    if (e.type === 'open') {
      if (!seen) {
        seen = { fallback: false, affinity: false };
        this.#seen.set(f, seen);
        bump(this.flowsOpened, f.kind);
      }
      if (f.placedBy === 'affinity' && !seen.affinity && f.interface) {
        seen.affinity = true;
        bump(this.affinity, f.interface);
      }
      // the plain-HTTP inbound may pin a flow again (a retry through the next interface)
      if (f.placedBy === 'fallback' && !seen.fallback && f.interface) {
        seen.fallback = true;
        bump(this.fallbacks, f.interface);
        return { fallback: f };
      }
      return undefined;
    }
    if (!seen) {
      // pinned before these counters began (not ours to count), or never pinned: its dial failed
      if (f.interface !== null) return undefined;
      bump(this.flowsOpened, f.kind);
    }
    const reason = reasonLabel(f.closeReason);
    bump(this.flowsClosed, `${f.kind}|${reason}`);
    if ((reason === 'dial failed' || reason === 'failed') && f.closeCode) bump(this.dialErrors, f.closeCode);
    if (f.interface) {
      const b = this.closedBytes.get(f.interface);
      if (b) {
        b.up += f.bytesUp;
        b.down += f.bytesDown;
      } else this.closedBytes.set(f.interface, { up: f.bytesUp, down: f.bytesDown });
    }
    return undefined;
  }
}
