// pageload: what a browser opening a page feels. A page load is `pageFlows` (50) new flows
// started at the same instant, each one small HTTP request (300 B, `Connection: close`) and one
// small response (4 KiB body) from the sink's HTTP server, which closes first. Per flow: the time
// from its start (just before its connect) to the last byte of the response body. Per round,
// `pageLoads` page loads (a short pause between them) per contender; the round's p50 and p99
// (nearest rank) over all its flows; the table shows the median over rounds, in ms.
//  - direct: origin-form straight to the sink (the floor);
//  - SOCKS5 and HTTP CONNECT: a tunnel to the sink (bench/client.ts), then origin-form;
//  - HTTP forward: a new connection to the proxy per flow, absolute-form `GET http://...`.
import type { Socket } from 'node:net';
import { openTunnel, settleOnce, type Via } from './client.js';
import { assertAlive } from './proxies.js';
import { LABEL, REF, casesFor, cpuOf, interleaved, key, type Case, type Ctx } from './common.js';
import { fmt, median, percentile, sortedCopy, type Row } from './stats.js';

/** Bytes of each request (padded with a header), and of each response body. */
export const REQUEST_BYTES = 300;
export const BODY_BYTES = 4096;
const FLOW_TIMEOUT_MS = 10_000;
const PAUSE_MS = 100;

/** A GET of BODY_BYTES from the sink, padded to exactly REQUEST_BYTES with an `X-Pad` header. */
export function pageRequest(target: string, host: string): Buffer {
  const head =
    `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: holdfast-bench/pageload\r\n` +
    'Accept: */*\r\nConnection: close\r\nX-Pad: ';
  const pad = REQUEST_BYTES - head.length - 4; // the pad's value, then \r\n\r\n
  if (pad < 1) throw new Error(`pageload: request head alone is ${head.length} bytes`);
  return Buffer.from(`${head}${'p'.repeat(pad)}\r\n\r\n`, 'latin1');
}

/** Where a case's flows connect, and what they send there. */
interface Route {
  via: Via;
  port: number;
  request: Buffer;
}

function routeOf(ctx: Ctx, c: Case): Route {
  const sink = `127.0.0.1:${ctx.sink.http}`;
  const path = `/bytes?n=${BODY_BYTES}`;
  if (c.protocol === 'forward') {
    const proxyPort = c.running?.port ?? 0;
    return { via: { kind: 'direct' }, port: proxyPort, request: pageRequest(`http://${sink}${path}`, sink) };
  }
  return { via: c.via, port: ctx.sink.http, request: pageRequest(path, sink) };
}

/**
 * Wait for one whole HTTP response on sock: resolves with the time of its last body byte
 * (performance.now()), once the peer has closed too (the sink closes first). Without a
 * Content-Length, the last byte is the one before the close.
 */
function readResponse(sock: Socket, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let head = '';
    let want = -1; // body bytes expected; -1 until the head is parsed, -2 with no Content-Length
    let body = 0;
    let lastByteAt = 0;
    const settle = settleOnce(
      sock,
      timeoutMs,
      () =>
        new Error(
          want >= 0 && body === want
            ? `no close after the response in ${timeoutMs} ms`
            : `no whole response in ${timeoutMs} ms (${body} body bytes)`,
        ),
      (err) => (err ? reject(err) : resolve(lastByteAt)),
    );
    const onBody = (n: number): void => {
      body += n;
      lastByteAt = performance.now();
      if (want >= 0 && body > want) settle(new Error(`body longer than Content-Length ${want}`));
    };
    sock.on('data', (d: Buffer) => {
      if (want !== -1) return onBody(d.length);
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 16384) settle(new Error('response head too long'));
        return;
      }
      const status = head.slice(9, 12);
      if (!head.startsWith('HTTP/1.') || status !== '200') return settle(new Error(`HTTP ${head.slice(0, head.indexOf('\r\n'))}`));
      const len = /\r\ncontent-length:\s*(\d+)/i.exec(head.slice(0, end + 2));
      want = len === null ? -2 : Number(len[1]);
      const rest = head.length - end - 4;
      if (rest > 0) onBody(rest);
      else if (want === 0) lastByteAt = performance.now();
    });
    sock.on('end', () => {
      if (want === -1) return settle(new Error('closed before the response head'));
      if (want >= 0 && body < want) return settle(new Error(`closed after ${body} of ${want} body bytes`));
      if (want === -2 && body < BODY_BYTES) return settle(new Error(`closed after ${body} body bytes (no Content-Length)`));
      sock.end();
    });
    sock.on('error', (e) => settle(e));
    sock.on('close', () => settle(want === -1 || lastByteAt === 0 ? new Error('closed without a response') : undefined));
    sock.resume();
  });
}

/** One flow: µs from its start to the last response byte. Bounded by FLOW_TIMEOUT_MS overall. */
async function flow(route: Route): Promise<number> {
  const t0 = performance.now();
  const sock = await openTunnel(route.via, route.port, FLOW_TIMEOUT_MS);
  const read = readResponse(sock, Math.max(1, FLOW_TIMEOUT_MS - (performance.now() - t0)));
  sock.write(route.request);
  return ((await read) - t0) * 1000;
}

interface Run {
  /** µs per completed flow, over all page loads of the run. */
  ttlb: number[];
  /** ms from the first flow's start to the last flow's settling, per page load. */
  pages: number[];
  errors: number;
  cpuSec: number;
  firstError?: string;
}

/** `loads` page loads of `flows` flows each, one after another with a short pause. */
async function measure(ctx: Ctx, c: Case, loads: number, flows: number): Promise<Run> {
  if (c.running !== undefined) assertAlive(c.running);
  const route = routeOf(ctx, c);
  const run: Run = { ttlb: [], pages: [], errors: 0, cpuSec: 0 };
  const cpu0 = cpuOf(c);
  for (let i = 0; i < loads; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, PAUSE_MS));
    const t0 = performance.now();
    const results = await Promise.allSettled(Array.from({ length: flows }, () => flow(route)));
    run.pages.push(performance.now() - t0);
    let ok = 0;
    for (const r of results) {
      if (r.status === 'fulfilled') {
        run.ttlb.push(r.value);
        ok++;
      } else {
        run.errors++;
        run.firstError ??= (r.reason as Error).message;
      }
    }
    // A proxy that refuses everything must not cost every page load its timeouts.
    if (ok === 0) throw new Error(`a page load with no flow completed: ${run.firstError}`);
  }
  run.cpuSec = cpuOf(c) - cpu0;
  return run;
}

export async function pageload(ctx: Ctx): Promise<Row[]> {
  const { rounds, pageLoads, pageFlows } = ctx.settings;
  const cases = casesFor(ctx, ['socks5', 'connect', 'forward'], true);
  ctx.log(
    `pageload: ${cases.length} cases × ${rounds} rounds of ${pageLoads} page loads, each ${pageFlows} flows at once ` +
      `(${REQUEST_BYTES} B up, ${BODY_BYTES} B body down), ${PAUSE_MS} ms apart`,
  );
  const { runs, failed } = await interleaved(ctx, cases, {
    warm: (c) => measure(ctx, c, 1, pageFlows),
    run: (c) => measure(ctx, c, pageLoads, pageFlows),
    said: (_c, run) => {
      const s = sortedCopy(run.ttlb);
      return `${fmt(percentile(s, 50) / 1000)}/${fmt(percentile(s, 99) / 1000)}${run.errors > 0 ? ` (${run.errors} err)` : ''}`;
    },
    unit: 'ms (time to last byte p50/p99)',
  });
  const rows: Row[] = [];
  for (const m of ['p50', 'p99'] as const) {
    for (const c of cases) {
      const scenario = `pageload TTLB ${m} ${LABEL[c.protocol]}`;
      const list = runs.get(key(c)) ?? [];
      const why = failed.get(key(c));
      if (list.length === 0) {
        rows.push({ scenario, proxy: c.proxy, samples: [], unit: 'ms', better: 'lower', skipped: why ?? 'no sample' });
        continue;
      }
      const errors = list.reduce((a, x) => a + x.errors, 0);
      const attempted = list.reduce((a, x) => a + x.ttlb.length + x.errors, 0);
      const firstError = list.find((x) => x.firstError !== undefined)?.firstError;
      const cpuUs = median(list.map((x) => (x.cpuSec / Math.max(1, x.ttlb.length)) * 1e6));
      const page = median(list.map((x) => median(x.pages)));
      rows.push({
        scenario,
        proxy: c.proxy,
        samples: list.map((x) => percentile(sortedCopy(x.ttlb), m === 'p50' ? 50 : 99) / 1000),
        unit: 'ms',
        better: 'lower',
        ...(c.protocol === 'direct' ? {} : { ref: REF[c.protocol] }),
        note: [
          m !== 'p50' ? '' : c.protocol === 'direct' ? 'the floor: client ⇄ sink' : `proxy CPU ${fmt(cpuUs)} µs/flow`,
          m !== 'p50' ? '' : `page ${fmt(page)} ms`,
          errors > 0 ? `${errors}/${attempted} flows failed (${firstError})` : '',
          why === undefined ? '' : `failed later: ${why}`,
        ]
          .filter(Boolean)
          .join('; '),
      });
    }
  }
  return rows;
}
