// latency: what a proxy adds to a small request/response.
//  - rtt: one tunnel to the echo sink, then sequential 64-byte round trips (p50, p99 per round).
//  - new flow: connect + handshake + the first 1-byte round trip, one after another (the sink
//    answers and closes).
//  - new flow after idle: the same flow, but each after a pause, the cases taking turns: what a
//    click feels, after the proxy sat idle (its caches cold, work it deferred done).
// Reported as the median over rounds of each round's p50 and p99, in µs.
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ECHO, newFlowMicros, openTunnel } from './client.js';
import { assertAlive } from './proxies.js';
import { LABEL, REF, casesFor, key, roundOrder, type Case, type Ctx } from './common.js';
import { fmt, percentile, sortedCopy, type Row } from './stats.js';

const MSG = 64;

/** n sequential round trips of size bytes on an echoing socket; µs each. */
function pingPong(sock: Socket, n: number, size: number, timeoutMs: number): Promise<Float64Array> {
  const out = new Float64Array(n);
  const msg = Buffer.alloc(size, 'p');
  return new Promise((resolve, reject) => {
    let i = 0;
    let got = 0;
    let t0 = 0;
    const timer = setTimeout(() => done(new Error(`round trips timed out at ${i}/${n}`)), timeoutMs);
    const done = (err?: Error): void => {
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('error', done);
      if (err === undefined) resolve(out);
      else reject(err);
    };
    const send = (): void => {
      t0 = performance.now();
      sock.write(msg);
    };
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got < size) return;
      out[i++] = (performance.now() - t0) * 1000;
      got -= size;
      if (i === n) done();
      else send();
    };
    sock.on('data', onData);
    sock.once('error', done);
    sock.resume();
    send();
  });
}

async function rtts(ctx: Ctx, c: Case): Promise<Float64Array> {
  const sock = await openTunnel(c.via, ctx.sink.raw);
  try {
    sock.write(ECHO);
    return await pingPong(sock, ctx.settings.rtts, MSG, 30_000);
  } finally {
    sock.destroy();
  }
}

/** n sequential new flows (client.ts newFlowMicros), µs each. */
async function newFlows(ctx: Ctx, c: Case): Promise<Float64Array> {
  const n = ctx.settings.newConns;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = await newFlowMicros(c.via, ctx.sink.raw);
  return out;
}

/** New flows per case before the first round (untimed). */
const WARM_FLOWS = 1000;

/** The pause before each flow of the "after idle" rows. */
const IDLE_PAUSE_MS = 10;

/**
 * `settings.idleFlows` new flows per case, each after a pause of IDLE_PAUSE_MS, the cases taking
 * turns (flow i of each, then flow i+1; each turn in the next `roundOrder`): every proxy sits
 * idle for at least the pause before each of its flows. A case whose flow fails is left out of the
 * later turns.
 */
async function idleFlows(ctx: Ctx, cases: readonly Case[], failed: Map<string, string>): Promise<Map<string, Float64Array>> {
  const n = ctx.settings.idleFlows;
  const out = new Map(cases.map((c) => [key(c), new Float64Array(n)] as const));
  for (let i = 0; i < n; i++) {
    for (const c of roundOrder(cases, i)) {
      if (failed.has(key(c))) continue;
      await sleep(IDLE_PAUSE_MS);
      try {
        out.get(key(c))![i] = await newFlowMicros(c.via, ctx.sink.raw);
      } catch (e) {
        failed.set(key(c), (e as Error).message);
      }
    }
  }
  return out;
}

const METRICS = ['rtt p50', 'rtt p99', 'new flow p50', 'new flow p99', 'new flow after idle p50', 'new flow after idle p99'] as const;
type Metric = (typeof METRICS)[number];

export async function latency(ctx: Ctx): Promise<Row[]> {
  const { rounds, rtts: nRtt, newConns, idleFlows: nIdle } = ctx.settings;
  const cases = casesFor(ctx, ['socks5', 'connect'], true);
  const samples = new Map<string, number[]>();
  const failed = new Map<string, string>();
  const put = (c: Case, m: Metric, v: number): void => {
    const k = `${key(c)}|${m}`;
    samples.set(k, [...(samples.get(k) ?? []), v]);
  };
  ctx.log(
    `latency: ${cases.length} cases × ${rounds} rounds of ${nRtt} round trips, ${newConns} new flows, and ${nIdle} new flows after ${IDLE_PAUSE_MS} ms idle`,
  );
  // warm-up: an established tunnel's round trips, and the new-flow path itself (a JIT-compiled
  // proxy runs its first few hundred flows slower; run alone, without `rate` before it, the rows
  // would time that instead of the steady state a system proxy spends its life in)
  for (const c of cases) {
    await rtts(ctx, c).catch(() => undefined);
    // a case that fails here fails again in the rounds, which say why
    for (let i = 0; i < WARM_FLOWS; i++) if (!(await newFlowMicros(c.via, ctx.sink.raw).then(() => true, () => false))) break;
  }
  for (let r = 0; r < rounds; r++) {
    const line: string[] = [];
    for (const c of roundOrder(cases, r)) {
      if (failed.has(key(c))) continue;
      try {
        if (c.running !== undefined) assertAlive(c.running);
        const a = sortedCopy(await rtts(ctx, c));
        const b = sortedCopy(await newFlows(ctx, c));
        put(c, 'rtt p50', percentile(a, 50));
        put(c, 'rtt p99', percentile(a, 99));
        put(c, 'new flow p50', percentile(b, 50));
        put(c, 'new flow p99', percentile(b, 99));
        line.push(`${c.proxy}/${c.protocol} ${fmt(percentile(a, 50))}/${fmt(percentile(a, 99))}`);
      } catch (e) {
        failed.set(key(c), (e as Error).message);
      }
    }
    ctx.log(`  round ${r + 1}: rtt p50/p99 µs: ${line.join(', ')}`);
    const idle = await idleFlows(ctx, roundOrder(cases, r), failed);
    const said: string[] = [];
    for (const c of cases) {
      if (failed.has(key(c))) continue;
      const b = sortedCopy(idle.get(key(c))!);
      put(c, 'new flow after idle p50', percentile(b, 50));
      put(c, 'new flow after idle p99', percentile(b, 99));
      said.push(`${c.proxy}/${c.protocol} ${fmt(percentile(b, 50))}/${fmt(percentile(b, 99))}`);
    }
    ctx.log(`  round ${r + 1}: new flow after idle p50/p99 µs: ${said.join(', ')}`);
  }
  const rows: Row[] = [];
  for (const m of METRICS) {
    for (const c of cases) {
      const scenario = `latency ${m} ${LABEL[c.protocol]}`;
      const list = samples.get(`${key(c)}|${m}`) ?? [];
      const why = failed.get(key(c));
      if (list.length === 0) {
        rows.push({ scenario, proxy: c.proxy, samples: [], unit: 'µs', better: 'lower', skipped: why ?? 'no sample' });
        continue;
      }
      rows.push({
        scenario,
        proxy: c.proxy,
        samples: list,
        unit: 'µs',
        better: 'lower',
        ...(c.protocol === 'direct' ? {} : { ref: REF[c.protocol] }),
        note: why === undefined ? '' : `failed later: ${why}`,
      });
    }
  }
  return rows;
}
