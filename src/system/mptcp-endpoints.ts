// MPTCP endpoints kept in step with the monitor (holdfast start with `mptcp: on` and
// CAP_NET_ADMIN). The kernel's in-kernel path manager opens an extra subflow of an MPTCP
// connection only from an address that has a `subflow` endpoint, and only up to `ip mptcp limits`.
// For each usable address (an up, non-loopback interface with a default route of the family;
// IPv6 link-local excluded) holdfast adds `ip mptcp endpoint add ADDR dev IF id N subflow backup`
// unless the host already has an endpoint for that address (NetworkManager adds them on many
// desktops: those are never touched), raises the limits if they are lower than needed, and at
// exit removes exactly the endpoints it added and puts back the limits it raised. `backup`: the
// bytes stay on the pinned interface's subflow while it lives (KERNEL-NOTES, "Measured later").
// Carrier is not looked at: an endpoint is removed only when its address goes, because deleting
// an endpoint closes the subflows from its address, and a short outage should heal.
// holdfast's endpoints carry ids OWN_ID_MIN..OWN_ID_MAX, so leftovers of a killed run are found
// and removed at the next start.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Family, NetMonitor, NetSnapshot } from '../contracts.js';
import { hasNetAdmin, type IpRun, ipRun } from './policy-routing.js';

export const OWN_ID_MIN = 200;
export const OWN_ID_MAX = 254;
/** the kernel's cap on subflows per connection and on accepted ADD_ADDRs (MPTCP_PM_ADDR_MAX) */
export const KERNEL_LIMIT_MAX = 8;

export interface Endpoint {
  readonly ip: string;
  readonly dev: string | null;
  readonly id: number;
  readonly subflow: boolean;
  readonly backup: boolean;
}

export interface UsableAddress {
  readonly ip: string;
  readonly dev: string;
  readonly family: Family;
}

export interface Limits {
  readonly subflows: number;
  readonly addAddrAccepted: number;
}

export interface EndpointPlan {
  /** endpoints to add (ids chosen from the free ones in holdfast's range) */
  readonly add: readonly Endpoint[];
  /** holdfast's endpoints whose address is no longer usable (or moved to another device) */
  readonly remove: readonly Endpoint[];
  /** the limits to set, or null if the current ones are high enough */
  readonly limits: Limits | null;
  /** usable addresses without a `subflow` endpoint that holdfast may not add (for doctor) */
  readonly missing: readonly UsableAddress[];
}

const isLinkLocal6 = (ip: string) => /^fe[89ab]/i.test(ip);
export const isOwnId = (id: number) => id >= OWN_ID_MIN && id <= OWN_ID_MAX;

/** The addresses a subflow may start from in `snap` (pure). */
export function usableAddresses(snap: NetSnapshot): UsableAddress[] {
  const out: UsableAddress[] = [];
  for (const i of snap.interfaces) {
    if (i.loopback || !i.up) continue;
    for (const a of i.addresses) {
      if (a.family === 6 && isLinkLocal6(a.ip)) continue;
      if (!i.defaultRoutes.some((r) => r.family === a.family)) continue;
      out.push({ ip: a.ip.split('%')[0], dev: i.name, family: a.family });
    }
  }
  return out;
}

/**
 * What to change so every usable address of `snap` has a subflow endpoint (pure). `have` is the
 * kernel's endpoint list; those with ids in holdfast's range are holdfast's, the others are the
 * host's and are neither changed nor duplicated. `manage`: false plans nothing and only reports
 * what is missing (no CAP_NET_ADMIN).
 */
export function planEndpoints(snap: NetSnapshot, have: readonly Endpoint[], limits: Limits, manage = true): EndpointPlan {
  const usable = usableAddresses(snap);
  const remove: Endpoint[] = [];
  const keep: Endpoint[] = [];
  for (const e of have) {
    if (!isOwnId(e.id)) {
      keep.push(e);
      continue;
    }
    if (usable.some((u) => u.ip === e.ip && (e.dev === null || e.dev === u.dev))) keep.push(e);
    else remove.push(e);
  }
  const used = new Set(keep.map((e) => e.id));
  const add: Endpoint[] = [];
  const missing: UsableAddress[] = [];
  let nextId = OWN_ID_MIN;
  for (const u of usable) {
    const ep = keep.find((e) => e.ip === u.ip);
    if (ep) {
      if (!ep.subflow) missing.push(u); // the host's, without the subflow flag: not ours to change
      continue;
    }
    while (used.has(nextId) && nextId <= OWN_ID_MAX) nextId++;
    if (!manage || nextId > OWN_ID_MAX) {
      missing.push(u);
      continue;
    }
    used.add(nextId);
    add.push({ ip: u.ip, dev: u.dev, id: nextId, subflow: true, backup: true });
  }
  if (!manage) return { add: [], remove: [], limits: null, missing };
  const subflowEndpoints = keep.filter((e) => e.subflow).length + add.length;
  const need = Math.min(KERNEL_LIMIT_MAX, subflowEndpoints);
  const next = { subflows: Math.max(limits.subflows, need), addAddrAccepted: Math.max(limits.addAddrAccepted, need) };
  const raise = next.subflows !== limits.subflows || next.addAddrAccepted !== limits.addAddrAccepted;
  return { add, remove, limits: raise ? next : null, missing };
}

/** `ip -j mptcp endpoint show` -> endpoints. */
export function parseEndpoints(json: string): Endpoint[] {
  if (!json.trim()) return [];
  return (JSON.parse(json) as Array<{ address?: string; id?: number; dev?: string; subflow?: boolean; backup?: boolean }>)
    .filter((e) => typeof e.address === 'string' && typeof e.id === 'number')
    .map((e) => ({ ip: e.address!, dev: e.dev ?? null, id: e.id!, subflow: !!e.subflow, backup: !!e.backup }));
}

/** `ip mptcp limits show` ("add_addr_accepted 0 subflows 2") -> limits, or null. */
export function parseLimits(text: string): Limits | null {
  const s = /subflows\s+(\d+)/.exec(text);
  const a = /add_addr_accepted\s+(\d+)/.exec(text);
  return s && a ? { subflows: Number(s[1]), addAddrAccepted: Number(a[1]) } : null;
}

export function endpointArgs(e: Endpoint, op: 'add' | 'del'): string[] {
  if (op === 'del') return ['mptcp', 'endpoint', 'del', 'id', String(e.id)];
  return ['mptcp', 'endpoint', 'add', e.ip, ...(e.dev ? ['dev', e.dev] : []), 'id', String(e.id), 'subflow', ...(e.backup ? ['backup'] : [])];
}

const limitsArgs = (l: Limits) => ['mptcp', 'limits', 'set', 'subflow', String(l.subflows), 'add_addr_accepted', String(l.addAddrAccepted)];

/** Read the kernel's endpoints and limits. Throws if `ip mptcp` cannot (no MPTCP, old iproute2). */
export async function readMptcpState(run: IpRun = ipRun): Promise<{ endpoints: Endpoint[]; limits: Limits }> {
  const e = await run(['-j', 'mptcp', 'endpoint', 'show']);
  if (!e.ok) throw new Error(`ip mptcp endpoint show: ${e.stderr}`);
  const l = await run(['mptcp', 'limits', 'show']);
  const limits = l.ok ? parseLimits(l.stdout) : null;
  if (!limits) throw new Error(`ip mptcp limits show: ${l.stderr || l.stdout}`);
  return { endpoints: parseEndpoints(e.stdout), limits };
}

export interface MptcpEndpointsOptions {
  readonly log: Logger;
  /** the privilege check (tests replace it) */
  readonly hasNetAdmin?: () => boolean;
}

/** Keeps holdfast's MPTCP endpoints in step with the monitor; close() removes them. */
export class MptcpEndpoints {
  readonly #monitor: NetMonitor;
  readonly #o: MptcpEndpointsOptions;
  readonly #run: IpRun;
  /** holdfast's endpoints in the kernel now, by id */
  readonly #ours = new Map<number, Endpoint>();
  /** the limits found before holdfast raised them (put back at exit) */
  #limitsBefore: Limits | null = null;
  #unsubscribe: (() => void) | undefined;
  #chain: Promise<void> = Promise.resolve();
  #pending = false;
  #closed = false;

  constructor(monitor: NetMonitor, o: MptcpEndpointsOptions, run: IpRun = ipRun) {
    this.#monitor = monitor;
    this.#o = o;
    this.#run = run;
  }

  /**
   * Without CAP_NET_ADMIN (or without `ip mptcp`): log once what is missing and return false;
   * the host's endpoints are used as they are. Else remove leftovers, sync, follow changes.
   */
  async start(): Promise<boolean> {
    if (!(this.#o.hasNetAdmin ?? hasNetAdmin)()) {
      this.#o.log.info('mptcp: no CAP_NET_ADMIN, using the host\'s MPTCP endpoints as they are (`holdfast doctor` says what is missing)');
      return false;
    }
    let state;
    try {
      state = await readMptcpState(this.#run);
    } catch (err) {
      this.#o.log.warn({ why: (err as Error).message }, 'mptcp: cannot read the MPTCP endpoints; using the host\'s as they are');
      return false;
    }
    const left = state.endpoints.filter((e) => isOwnId(e.id));
    for (const e of left) await this.#run(endpointArgs(e, 'del'));
    if (left.length) this.#o.log.warn({ endpoints: left.map((e) => e.ip) }, 'mptcp: removed endpoints left by an earlier run');
    await this.#sync();
    this.#unsubscribe = this.#monitor.onChange(() => void this.#schedule());
    await this.#schedule();
    return true;
  }

  /** Resolves when the syncs scheduled so far are done. */
  idle(): Promise<void> {
    return this.#chain;
  }

  /** holdfast's endpoints in the kernel now. */
  installed(): Endpoint[] {
    return [...this.#ours.values()];
  }

  #schedule(): Promise<void> {
    if (this.#pending) return this.#chain;
    this.#pending = true;
    this.#chain = this.#chain.then(async () => {
      this.#pending = false;
      if (this.#closed) return;
      await this.#sync();
    });
    return this.#chain;
  }

  async #sync(): Promise<void> {
    try {
      const state = await readMptcpState(this.#run);
      // the kernel's word on which of ours still exist (deleting a device removes its endpoints)
      for (const id of [...this.#ours.keys()]) if (!state.endpoints.some((e) => e.id === id)) this.#ours.delete(id);
      const plan = planEndpoints(this.#monitor.current(), state.endpoints, state.limits);
      const errors: string[] = [];
      for (const e of plan.remove) {
        const r = await this.#run(endpointArgs(e, 'del'));
        if (r.ok) this.#ours.delete(e.id);
        else errors.push(`ip ${endpointArgs(e, 'del').join(' ')}: ${r.stderr}`);
      }
      for (const e of plan.add) {
        const r = await this.#run(endpointArgs(e, 'add'));
        if (r.ok) this.#ours.set(e.id, e);
        else errors.push(`ip ${endpointArgs(e, 'add').join(' ')}: ${r.stderr}`);
      }
      if (plan.limits) {
        const r = await this.#run(limitsArgs(plan.limits));
        if (r.ok) this.#limitsBefore ??= state.limits;
        else errors.push(`ip ${limitsArgs(plan.limits).join(' ')}: ${r.stderr}`);
      }
      if (plan.add.length || plan.remove.length || plan.limits) {
        this.#o.log.info(
          { added: plan.add.map((e) => `${e.ip}%${e.dev}`), removed: plan.remove.map((e) => e.ip), limits: plan.limits ?? undefined },
          'mptcp endpoints',
        );
      }
      if (errors.length) this.#o.log.error({ errors }, 'mptcp endpoints: some commands failed');
    } catch (err) {
      this.#o.log.error({ err }, 'mptcp endpoints sync failed');
    }
  }

  /** Stop following changes, remove holdfast's endpoints, put back the limits. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return this.#chain;
    this.#closed = true;
    this.#unsubscribe?.();
    await this.#chain;
    this.#chain = (async () => {
      const n = this.#ours.size;
      for (const e of this.#ours.values()) await this.#run(endpointArgs(e, 'del'));
      this.#ours.clear();
      if (this.#limitsBefore) await this.#run(limitsArgs(this.#limitsBefore));
      if (n || this.#limitsBefore) this.#o.log.info({ endpoints: n, limits: this.#limitsBefore ?? undefined }, 'mptcp endpoints removed');
      this.#limitsBefore = null;
    })();
    return this.#chain;
  }
}

/** Start the helper (returns it also when it could not manage: it then holds nothing). */
export async function startMptcpEndpoints(monitor: NetMonitor, o: MptcpEndpointsOptions): Promise<MptcpEndpoints> {
  const m = new MptcpEndpoints(monitor, o);
  await m.start();
  return m;
}

export interface MptcpHealth {
  readonly status: 'ok' | 'info' | 'warn';
  readonly summary: string;
  readonly fix?: string;
  readonly data?: unknown;
}

/** What doctor reads for MPTCP: net.mptcp.enabled (undefined: no MPTCP) and `ip mptcp` state. */
export interface MptcpHostState {
  readonly enabled: string | undefined;
  readonly state: { endpoints: Endpoint[]; limits: Limits } | Error;
}

export async function readMptcpHost(procSys = '/proc/sys', run: IpRun = ipRun): Promise<MptcpHostState> {
  let enabled: string | undefined;
  try {
    enabled = readFileSync(`${procSys}/net/mptcp/enabled`, 'utf8').trim();
  } catch {
    return { enabled: undefined, state: new Error('no net.mptcp.enabled') };
  }
  let state: MptcpHostState['state'];
  try {
    state = await readMptcpState(run);
  } catch (err) {
    state = err as Error;
  }
  return { enabled, state };
}

/**
 * What `holdfast doctor` says about MPTCP (pure): is it enabled, and does every usable address
 * have a `subflow` endpoint with limits to match (what `mptcp: on` needs to move a flow off a
 * dead link).
 */
export function mptcpHealth(snap: NetSnapshot, host: MptcpHostState): MptcpHealth {
  const { enabled } = host;
  if (enabled === undefined) {
    return { status: 'info', summary: 'the kernel has no MPTCP (no net.mptcp.enabled): `mptcp: on` uses plain TCP' };
  }
  if (enabled === '0') {
    return {
      status: 'warn',
      summary: 'MPTCP is disabled (net.mptcp.enabled=0): `mptcp: on` uses plain TCP',
      fix: 'sudo sysctl -w net.mptcp.enabled=1 (persist it in /etc/sysctl.d/90-holdfast.conf)',
    };
  }
  if (host.state instanceof Error) {
    return { status: 'info', summary: `cannot read the MPTCP endpoints (${host.state.message}): is iproute2 recent enough?` };
  }
  const state = host.state;
  const plan = planEndpoints(snap, state.endpoints, state.limits, false);
  const subflowEps = state.endpoints.filter((e) => e.subflow).length;
  const data = { endpoints: state.endpoints, limits: state.limits, missing: plan.missing };
  const manage = '`holdfast start --mptcp` with CAP_NET_ADMIN keeps them';
  if (plan.missing.length) {
    const m = plan.missing[0];
    const more = plan.missing.length > 1 ? ` (and likewise for ${plan.missing.slice(1).map((x) => x.ip).join(', ')})` : '';
    return {
      status: 'info',
      summary: `no MPTCP subflow endpoint for ${plan.missing.map((x) => `${x.ip} (${x.dev})`).join(', ')}: an MPTCP flow cannot move there`,
      fix: `${manage}, or: sudo ip mptcp endpoint add ${m.ip} dev ${m.dev} subflow backup${more}`,
      data,
    };
  }
  const need = Math.min(KERNEL_LIMIT_MAX, subflowEps);
  if (state.limits.subflows < need) {
    return {
      status: 'info',
      summary: `MPTCP limits allow ${state.limits.subflows} extra subflow(s) for ${subflowEps} subflow endpoint(s)`,
      fix: `${manage}, or: sudo ip mptcp limits set subflow ${need} add_addr_accepted ${Math.max(need, state.limits.addAddrAccepted)}`,
      data,
    };
  }
  return {
    status: 'ok',
    summary: `MPTCP enabled; subflow endpoints cover ${usableAddresses(snap).map((u) => `${u.ip} (${u.dev})`).join(', ') || 'no usable address yet'}; limits subflows ${state.limits.subflows}`,
    data,
  };
}
