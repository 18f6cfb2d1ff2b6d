// The feed: a short list of what happened, in words (route changes, interfaces coming and going,
// cuts, fallbacks), numbered so a client can ask for what came after the last one it saw.
import type { Clock, NetSnapshot, NetDiff } from '../contracts.js';
import { isLinkLocal } from '../net/addr.js';
import { bestDefault } from '../net/monitor.js';
import { notify } from './notify.js';

export type FeedType = 'start' | 'route' | 'net' | 'cut' | 'fallback' | 'moved';

export interface FeedEvent {
  /** increasing per feed: a client asks for events after the last seq it saw */
  readonly seq: number;
  /** ms since the epoch (holdfast's clock) */
  readonly at: number;
  readonly type: FeedType;
  readonly text: string;
  readonly interface: string | null;
}

/** The newest `size` events, and the listeners told of each new one. */
export class Feed {
  readonly #events: FeedEvent[] = [];
  readonly #listeners = new Set<(e: FeedEvent) => void>();
  #seq = 0;

  constructor(
    readonly clock: Pick<Clock, 'now'>,
    readonly size: number,
  ) {}

  push(type: FeedType, text: string, ifname: string | null): void {
    const e: FeedEvent = { seq: ++this.#seq, at: this.clock.now(), type, text, interface: ifname };
    this.#events.push(e);
    if (this.#events.length > this.size) this.#events.splice(0, this.#events.length - this.size);
    notify(this.#listeners, e);
  }

  /** Events with seq > after, oldest first. */
  after(after = 0): FeedEvent[] {
    if (after <= 0) return this.#events.slice();
    let i = this.#events.length;
    while (i > 0 && this.#events[i - 1].seq > after) i--;
    return this.#events.slice(i);
  }

  onEvent(fn: (e: FeedEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  close(): void {
    this.#listeners.clear();
  }
}

export function fmtSeconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** "new flows go via if1", "... via if1 (IPv4), if2 (IPv6)", or "no default route yet" */
export function whereNewFlowsGo(snap: NetSnapshot): string {
  const b4 = bestDefault(snap, 4)?.ifname;
  const b6 = bestDefault(snap, 6)?.ifname;
  if (!b4 && !b6) return 'no default route yet';
  if (b4 === b6 || !b4 || !b6) return `new flows go via ${b4 ?? b6}`;
  return `new flows go via ${b4} (IPv4), ${b6} (IPv6)`;
}

function routesText(rs: readonly { gateway: string | null; metric: number }[]): string {
  const via = rs.map((r) => (r.gateway ? r.gateway : 'direct')).join(', ');
  const metrics = new Set(rs.map((r) => r.metric));
  return metrics.size === 1
    ? `via ${via} (metric ${rs[0].metric})`
    : rs.map((r) => `via ${r.gateway ?? 'direct'} (metric ${r.metric})`).join(', ');
}

/** Feed lines for one network change: what happened to each interface, then where new flows go. */
export function describeChange(
  prev: NetSnapshot,
  next: NetSnapshot,
  diff: NetDiff,
): { type: FeedType; text: string; interface: string | null }[] {
  const out: { type: FeedType; text: string; interface: string | null }[] = [];
  const before = new Map(prev.interfaces.map((i) => [i.name, i]));
  const after = new Map(next.interfaces.map((i) => [i.name, i]));
  const names = new Set([...diff.changed, ...(diff.routes ? [...before.keys(), ...after.keys()] : [])]);
  for (const name of names) {
    const p = before.get(name);
    const n = after.get(name);
    const parts: string[] = [];
    if (!p && n) parts.push('appeared');
    else if (p && !n) parts.push('went away');
    else if (p && n) {
      const wasUp = p.up && p.carrier;
      const isUp = n.up && n.carrier;
      if (!wasUp && isUp) parts.push('came up');
      else if (wasUp && !isUp) parts.push(!n.up ? 'went down' : 'lost carrier');
      else if (p.up !== n.up) parts.push(n.up ? 'is up (no carrier)' : 'is down');
      const fmt = (a: { ip: string; prefixLen: number }) => `${a.ip}/${a.prefixLen}`;
      const pa = new Set(p.addresses.map(fmt));
      const na = new Set(n.addresses.map(fmt));
      const added = n.addresses.filter((a) => !pa.has(fmt(a)) && !isLinkLocal(a.ip)).map(fmt);
      const removed = p.addresses.filter((a) => !na.has(fmt(a)) && !isLinkLocal(a.ip)).map(fmt);
      if (added.length) parts.push(`gained ${added.join(', ')}`);
      if (removed.length) parts.push(`lost ${removed.join(', ')}`);
    }
    if (diff.routes) {
      const key = (r: { family: number; gateway: string | null; metric: number }) => `${r.family}|${r.gateway}|${r.metric}`;
      const pr = new Set((p?.defaultRoutes ?? []).map(key));
      const nr = new Set((n?.defaultRoutes ?? []).map(key));
      const added = (n?.defaultRoutes ?? []).filter((r) => !pr.has(key(r)));
      const removed = (p?.defaultRoutes ?? []).filter((r) => !nr.has(key(r)));
      const s = (l: unknown[]) => (l.length === 1 ? '' : 's');
      if (added.length) parts.push(`default route${s(added)} ${routesText(added)} added`);
      if (removed.length) parts.push(`default route${s(removed)} ${routesText(removed)} removed`);
    }
    if (parts.length) out.push({ type: 'net', text: `${name} ${parts.join('; ')}`, interface: name });
  }
  const moves = ([4, 6] as const)
    .map((family) => ({ family, was: bestDefault(prev, family), now: bestDefault(next, family) }))
    .filter((m) => m.was?.ifname !== m.now?.ifname);
  // IPv4 and IPv6 moving the same way is one event
  const same = moves.length === 2 && moves[0].was?.ifname === moves[1].was?.ifname && moves[0].now?.ifname === moves[1].now?.ifname;
  for (const m of same ? [{ ...moves[0], family: null }] : moves) {
    const fam = m.family === null ? '' : `IPv${m.family} `;
    const text = m.now
      ? `new ${fam}flows now go via ${m.now.ifname}${m.was ? `, was ${m.was.ifname}; live flows stay where they are` : ''}`
      : `no ${fam}default route any more${m.was ? ` (was ${m.was.ifname})` : ''}`;
    out.push({ type: 'route', text, interface: m.now?.ifname ?? null });
  }
  return out;
}
