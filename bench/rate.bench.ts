// rate (the handshake bench): many short flows at a fixed concurrency for a bounded time. Each
// flow: connect, SOCKS5 greeting + CONNECT (or HTTP CONNECT), send 1 KiB, receive 1 KiB, the
// sink closes, the client closes. Flows per second, plus the proxy's CPU µs per flow.
import { reqRespHeader, shortFlow } from './client.js';
import { assertAlive } from './proxies.js';
import { LABEL, REF, casesFor, cpuUsageOf, key, roundOrder, type Case, type Ctx } from './common.js';
import { fmt, median, type Row } from './stats.js';

interface Run {
  flows: number;
  errors: number;
  seconds: number;
  cpuSec: number;
  sysSec: number;
  firstError?: string;
}

async function measure(ctx: Ctx, c: Case, seconds: number): Promise<Run> {
  if (c.running !== undefined) assertAlive(c.running);
  const { rateConcurrency, rateFlowBytes } = ctx.settings;
  const payload = Buffer.concat([reqRespHeader(rateFlowBytes), Buffer.alloc(rateFlowBytes, 'q')]);
  const run: Run = { flows: 0, errors: 0, seconds: 0, cpuSec: 0, sysSec: 0 };
  const cpu0 = cpuUsageOf(c);
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < stopAt) {
      try {
        await shortFlow(c.via, ctx.sink.raw, payload, 10_000);
        run.flows++;
      } catch (e) {
        run.errors++;
        run.firstError ??= (e as Error).message;
        if (run.errors > 1000) return; // a refusing proxy must not spin for the whole window
      }
    }
  };
  await Promise.all(Array.from({ length: rateConcurrency }, worker));
  run.seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuUsageOf(c);
  run.cpuSec = cpu1.cpuSec - cpu0.cpuSec;
  run.sysSec = cpu1.sysSec - cpu0.sysSec;
  return run;
}

export async function rate(ctx: Ctx): Promise<Row[]> {
  const { rounds, rateSeconds, rateConcurrency, rateFlowBytes } = ctx.settings;
  const cases = casesFor(ctx, ['socks5', 'connect'], true);
  const runs = new Map<string, Run[]>(cases.map((c) => [key(c), []]));
  ctx.log(`rate: ${cases.length} cases × ${rounds} rounds of ${rateSeconds} s, concurrency ${rateConcurrency}, ${rateFlowBytes} B each way`);
  for (const c of cases) await measure(ctx, c, 0.5); // warm-up
  for (let r = 0; r < rounds; r++) {
    const line: string[] = [];
    for (const c of roundOrder(cases, r)) {
      const run = await measure(ctx, c, rateSeconds);
      runs.get(key(c))?.push(run);
      line.push(`${c.proxy}/${c.protocol} ${fmt(run.flows / run.seconds)}${run.errors > 0 ? ` (${run.errors} err)` : ''}`);
    }
    ctx.log(`  round ${r + 1}: ${line.join(', ')} flows/s`);
  }
  return cases.map((c): Row => {
    const list = runs.get(key(c)) ?? [];
    const errors = list.reduce((a, x) => a + x.errors, 0);
    const flows = list.reduce((a, x) => a + x.flows, 0);
    const firstError = list.find((x) => x.firstError !== undefined)?.firstError;
    const scenario = `rate ${LABEL[c.protocol]}`;
    if (flows === 0) return { scenario, proxy: c.proxy, samples: [], unit: 'flows/s', better: 'higher', skipped: firstError ?? 'no flow completed' };
    const cpu = list.map((x) => (x.cpuSec / Math.max(1, x.flows)) * 1e6);
    const cpuUs = median(cpu);
    const sysShare = median(list.map((x) => (x.cpuSec > 0 ? x.sysSec / x.cpuSec : 0)));
    return {
      scenario,
      proxy: c.proxy,
      samples: list.map((x) => x.flows / x.seconds),
      unit: 'flows/s',
      better: 'higher',
      ...(c.protocol === 'direct' ? {} : { ref: REF[c.protocol], cpu }),
      note: [
        c.protocol === 'direct' ? 'the floor: client ⇄ sink' : `proxy CPU ${fmt(cpuUs)} µs/flow (${Math.round(sysShare * 100)}% in the kernel)`,
        errors > 0 ? `${errors} errors (${firstError})` : '',
      ]
        .filter(Boolean)
        .join('; '),
    };
  });
}
