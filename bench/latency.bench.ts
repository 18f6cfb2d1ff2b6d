// latency: what a proxy adds to a small request/response.
//  - rtt: one tunnel to the echo sink, then sequential 64-byte round trips (p50, p99 per round).
//  - new flow: connect + handshake + the first 1-byte round trip, one after another (the sink
//    answers and closes).
// Reported as the median over rounds of each round's p50 and p99, in µs.
import type { Socket } from 'node:net';
import { ECHO, openTunnel, reqRespHeader } from './client.js';
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

/**
 * n sequential new flows, each timed from connect to the first byte back. The sink answers one
 * byte and closes first (mode 'R'), so the TIME_WAITs stay on its side, not on proxies' ports.
 */
async function newFlows(ctx: Ctx, c: Case): Promise<Float64Array> {
  const n = ctx.settings.newConns;
  const out = new Float64Array(n);
  const first = Buffer.concat([reqRespHeader(1), Buffer.from('!')]);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const sock = await openTunnel(c.via, ctx.sink.raw);
    try {
      sock.write(first);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no answer and close in 10 s')), 10_000);
        sock.once('data', () => (out[i] = (performance.now() - t0) * 1000));
        sock.once('close', () => {
          clearTimeout(timer);
          if (out[i] > 0) resolve();
          else reject(new Error('closed without an answer'));
        });
        sock.once('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
        sock.resume();
      });
    } finally {
      sock.destroy();
    }
  }
  return out;
}

type Metric = 'rtt p50' | 'rtt p99' | 'new flow p50' | 'new flow p99';

export async function latency(ctx: Ctx): Promise<Row[]> {
  const { rounds, rtts: nRtt, newConns } = ctx.settings;
  const cases = casesFor(ctx, ['socks5', 'connect'], true);
  const samples = new Map<string, number[]>();
  const failed = new Map<string, string>();
  const put = (c: Case, m: Metric, v: number): void => {
    const k = `${key(c)}|${m}`;
    samples.set(k, [...(samples.get(k) ?? []), v]);
  };
  ctx.log(`latency: ${cases.length} cases × ${rounds} rounds of ${nRtt} round trips and ${newConns} new flows`);
  for (const c of cases) await rtts(ctx, c).catch(() => undefined); // warm-up
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
  }
  const rows: Row[] = [];
  for (const m of ['rtt p50', 'rtt p99', 'new flow p50', 'new flow p99'] as const) {
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
