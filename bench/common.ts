// What every scenario gets, and how it lists the (proxy, protocol) pairs it measures.
import type { Via } from './client.js';
import type { Running } from './proxies.js';
import { groupUsage } from './procs.js';

export interface Settings {
  quick: boolean;
  rounds: number;
  bulkBytes: number;
  rateSeconds: number;
  rateConcurrency: number;
  rateFlowBytes: number;
  rtts: number;
  newConns: number;
  /** latency: new flows per case per round after an idle pause (the cases take turns) */
  idleFlows: number;
  /** pageload: page loads per contender per round, and the flows each starts at once. */
  pageLoads: number;
  pageFlows: number;
  tunnels: number;
}

export interface Ctx {
  settings: Settings;
  sink: { raw: number; http: number };
  proxies: readonly Running[];
  /** The temp dir: configs and logs. */
  dir: string;
  log(line: string): void;
}

export type Protocol = 'socks5' | 'connect' | 'forward';

/** One thing to measure: a proxy speaking a protocol, or no proxy. */
export interface Case {
  proxy: string;
  protocol: Protocol | 'direct';
  via: Via;
  running?: Running;
}

/** The comparison each protocol's rows are read against. */
export const REF: Record<Protocol, string> = { socks5: 'dante', connect: 'tinyproxy', forward: 'tinyproxy' };

export const LABEL: Record<Protocol | 'direct', string> = {
  direct: 'no proxy',
  socks5: 'SOCKS5',
  connect: 'HTTP CONNECT',
  forward: 'HTTP forward',
};

export function casesFor(ctx: Ctx, protocols: readonly Protocol[], withDirect: boolean): Case[] {
  const out: Case[] = withDirect ? [{ proxy: 'direct', protocol: 'direct', via: { kind: 'direct' } }] : [];
  for (const protocol of protocols) {
    for (const p of ctx.proxies) {
      if (!p.speaks[protocol]) continue;
      const via: Via =
        protocol === 'socks5' ? { kind: 'socks5', port: p.port } : protocol === 'connect' ? { kind: 'connect', port: p.port } : { kind: 'direct' };
      out.push({ proxy: p.name, protocol, via, running: p });
    }
  }
  return out;
}

/** CPU seconds the proxy's processes have used so far, and the part in the kernel (0 for no proxy). */
export function cpuUsageOf(c: Case): { cpuSec: number; sysSec: number } {
  if (c.running === undefined) return { cpuSec: 0, sysSec: 0 };
  const u = groupUsage(c.running.proc.pid, false);
  return { cpuSec: u.cpuSec, sysSec: u.sysSec };
}

/** CPU seconds the proxy's processes have used so far (0 for no proxy). */
export function cpuOf(c: Case): number {
  return cpuUsageOf(c).cpuSec;
}

export function key(c: Case): string {
  return `${c.protocol}/${c.proxy}`;
}

/**
 * The cases in round `r`'s order: the rows of a Williams design (a Latin square balanced for
 * carry-over; for an odd count, the square and its mirror), taken in turn. Over a full period (n
 * rounds for n cases, 2n for an odd n) each case runs once in each place (n odd: twice), and
 * each case runs right after each other case equally often: once (n even) or twice.
 * - The place matters: on this VM the order alone moved a sequential new-flow p50 by up to 2x
 *   (whichever proxy ran first in a round was slower).
 * - So does the predecessor. A plain rotation (A B C, B C A, ...) keeps the cyclic order, so a
 *   case follows the same one in every round but the one it opens. In an A/A run of `rate`
 *   (holdfast against a copy of itself), the copy that always ran right after tinyproxy made
 *   0.847x the other's flows/s at 128 against 118 µs of CPU a flow, and ran at par in the one
 *   round it opened (bench/README.md, "thirteenth pass").
 */
export function roundOrder<T>(cases: readonly T[], r: number): T[] {
  const n = cases.length;
  if (n === 0) return [];
  const row = r % (n % 2 === 0 ? n : 2 * n);
  const out: T[] = [];
  // the first row is 0, 1, n-1, 2, n-2, 3, ...; row k adds k (mod n); rows n..2n-1 mirror 0..n-1
  for (let j = 0; j < n; j++) {
    const first = j === 0 ? 0 : j % 2 === 1 ? (j + 1) / 2 : n - j / 2;
    out.push(cases[(first + row) % n]);
  }
  return row >= n ? out.reverse() : out;
}

/**
 * Warm every case up once, then run `rounds` rounds, each running every case once, in
 * `roundOrder` (drift hits all alike). A case whose warm-up or run throws drops out with its reason;
 * each round logs `round N: <what each case did> <unit>`.
 */
export async function interleaved<R>(
  ctx: Ctx,
  cases: readonly Case[],
  o: {
    readonly warm: (c: Case) => Promise<unknown>;
    readonly run: (c: Case) => Promise<R>;
    /** how one run reads in the round's log line */
    readonly said: (c: Case, r: R) => string;
    readonly unit: string;
  },
): Promise<{ runs: Map<string, R[]>; failed: Map<string, string> }> {
  const runs = new Map<string, R[]>(cases.map((c) => [key(c), []]));
  const failed = new Map<string, string>();
  for (const c of cases) {
    try {
      await o.warm(c);
    } catch (e) {
      failed.set(key(c), (e as Error).message);
    }
  }
  for (let r = 0; r < ctx.settings.rounds; r++) {
    const line: string[] = [];
    for (const c of roundOrder(cases, r)) {
      if (failed.has(key(c))) continue;
      try {
        const run = await o.run(c);
        runs.get(key(c))?.push(run);
        line.push(`${c.proxy}/${c.protocol} ${o.said(c, run)}`);
      } catch (e) {
        failed.set(key(c), (e as Error).message);
      }
    }
    ctx.log(`  round ${r + 1}: ${line.join(', ')} ${o.unit}`);
  }
  return { runs, failed };
}
