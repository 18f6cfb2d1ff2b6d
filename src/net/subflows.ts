// Which interface an MPTCP connection's subflows are on, and whether one of them still has a
// working path when the flow's pinned interface is lost (the FlowTable then moves the flow
// instead of cutting it). Pure: a snapshot and a probe of the subflows.
import type { NetSnapshot, SubflowProbe } from '../contracts.js';
import { lossOf } from './monitor.js';

/** The interface holding address `ip` in `snap`. */
export function ifnameOf(snap: NetSnapshot, ip: string): string | undefined {
  return snap.interfaces.find((i) => i.addresses.some((a) => a.ip === ip || a.ip.split('%')[0] === ip))?.name;
}

/** A subflow of the MPTCP connection on an interface other than `broken` whose path is fine. */
export function liveSubflow(
  snap: NetSnapshot,
  broken: string,
  probe: SubflowProbe,
): { ifname: string; local: string; all: string[] } | undefined {
  const subs = probe();
  if (!subs) return undefined;
  const all = subs.map((s) => ifnameOf(snap, s.local) ?? s.local);
  for (const s of subs) {
    const ifname = ifnameOf(snap, s.local);
    if (ifname && ifname !== broken && !lossOf(snap, ifname, s.local)) return { ifname, local: s.local, all };
  }
  return undefined;
}
