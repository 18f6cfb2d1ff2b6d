// memory: what an idle tunnel costs a proxy. Open N tunnels to the echo sink (each proven with
// one 1-byte round trip), let the proxy settle, read its process group's memory from /proc,
// divide the growth by N, close everything, and wait for the proxy to give the sockets back.
// VmRSS summed over processes (Dante forks: shared pages counted per process) and Pss (shared
// pages divided among their users: the fairer figure for a forking server) are both reported.
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { openTunnel, pool, type Via } from './client.js';
import { groupUsage, type GroupUsage } from './procs.js';
import { logTail, stopProcess } from './procs.js';
import { assertAlive, startFresh } from './proxies.js';
import { LABEL, REF, casesFor, type Case, type Ctx } from './common.js';
import type { Running } from './proxies.js';
import { fmt, type Row } from './stats.js';

const PROBE = Buffer.from('H.');
const CLOSE = Buffer.from('X');

async function openIdle(via: Via, sinkPort: number): Promise<Socket> {
  const sock = await openTunnel(via, sinkPort, 20_000);
  try {
    sock.write(PROBE);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no echo in 20 s')), 20_000);
      sock.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.resume();
    });
  } catch (e) {
    sock.destroy();
    throw e;
  }
  sock.pause();
  sock.on('error', () => sock.destroy()); // the close phase may see resets
  return sock;
}

/** Ask the sink to close each tunnel and wait (bounded) for the closes; destroy the rest. */
export async function closeAll(sockets: readonly Socket[], timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    let left = sockets.length;
    if (left === 0) return resolve();
    const timer = setTimeout(resolve, timeoutMs);
    const one = (): void => {
      if (--left === 0) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (const s of sockets) {
      if (s.destroyed) {
        one();
        continue;
      }
      s.once('close', one);
      s.resume();
      s.write(CLOSE);
    }
  });
  for (const s of sockets) s.destroy();
}

interface Result {
  before: GroupUsage;
  after: GroupUsage;
  opened: number;
  openSeconds: number;
  error?: string;
}

async function measure(ctx: Ctx, c: Case, running: Running): Promise<Result> {
  assertAlive(running);
  const n = ctx.settings.tunnels;
  const sockets: Socket[] = [];
  // Warm-up: the first flows load code and grow pools once; that is not a per-tunnel cost.
  const warm: Socket[] = [];
  await pool(64, 16, async () => void warm.push(await openIdle(c.via, ctx.sink.raw)));
  await closeAll(warm, 10_000);
  await sleep(1000);
  const before = groupUsage(running.proc.pid);
  let error: string | undefined;
  const t0 = performance.now();
  try {
    await pool(n, 128, async () => {
      if (error !== undefined) return;
      try {
        sockets.push(await openIdle(c.via, ctx.sink.raw));
      } catch (e) {
        error ??= `after ${sockets.length} tunnels: ${(e as Error).message}`;
      }
    });
    const openSeconds = (performance.now() - t0) / 1000;
    await sleep(2000); // let lazily grown buffers and forked workers settle
    const after = groupUsage(running.proc.pid);
    return { before, after, opened: sockets.length, openSeconds, ...(error === undefined ? {} : { error }) };
  } finally {
    // The sink closes first ('X'), so the TIME_WAITs land on its port, not on the proxy's
    // ephemeral ports: a proxy that binds 127.0.0.1:0 before connect (Dante; any pinned dialer)
    // would otherwise find no free port in the next case.
    await closeAll(sockets, 20_000);
    // Wait (bounded) until the proxy has closed what it held, so the next proxy starts clean.
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && groupUsage(running.proc.pid).fds > before.fds + 64) await sleep(200);
  }
}

export async function memory(ctx: Ctx): Promise<Row[]> {
  const cases = casesFor(ctx, ['socks5', 'connect'], false);
  ctx.log(`memory: ${cases.length} cases, ${ctx.settings.tunnels} idle tunnels each, one round`);
  const rows: Row[] = [];
  for (const c of cases) {
    const base = `memory ${LABEL[c.protocol]}`;
    const ref = c.protocol === 'direct' ? undefined : REF[c.protocol];
    let fresh: Running | undefined;
    try {
      // A fresh instance per case: earlier scenarios (and the other protocol's case) leave
      // grown heaps and forked workers behind, which would blur a before/after difference.
      if (c.running === undefined) throw new Error('memory needs a proxy');
      fresh = await startFresh(ctx.dir, c.running, ctx.log);
      const via: Via = c.via.kind === 'connect' ? { kind: 'connect', port: fresh.port } : { kind: 'socks5', port: fresh.port };
      const r = await measure(ctx, { ...c, via, running: fresh }, fresh);
      const per = (x: number, y: number): number => (y - x) / Math.max(1, r.opened) / 1024;
      const rss = per(r.before.rss, r.after.rss);
      const pss = per(r.before.pss, r.after.pss);
      const shape = `${r.after.processes} proc, ${r.after.threads} threads, ${r.after.fds} fds; RSS ${fmt(r.before.rss / 2 ** 20)}→${fmt(r.after.rss / 2 ** 20)} MiB; opened in ${fmt(r.openSeconds)} s`;
      const partial = r.opened < ctx.settings.tunnels ? `only ${r.opened}/${ctx.settings.tunnels}: ${r.error}` : '';
      ctx.log(`  ${c.proxy}/${c.protocol}: ${fmt(rss)} KiB RSS, ${fmt(pss)} KiB PSS per tunnel (${shape}) ${partial}`);
      rows.push({
        scenario: `${base} RSS/tunnel`,
        proxy: c.proxy,
        samples: [rss],
        unit: 'KiB',
        better: 'lower',
        ...(ref === undefined ? {} : { ref }),
        note: [shape, partial].filter(Boolean).join('; '),
      });
      rows.push({ scenario: `${base} PSS/tunnel`, proxy: c.proxy, samples: [pss], unit: 'KiB', better: 'lower', ...(ref === undefined ? {} : { ref }) });
    } catch (e) {
      const why = (e as Error).message.split('\n')[0];
      if (fresh?.proc.exitedAlready === true)
        ctx.log(`  ${c.proxy} exited (${fresh.proc.exitHow}); last lines of ${fresh.proc.logPath}:\n${logTail(fresh.proc, 20)}`);
      rows.push({ scenario: `${base} RSS/tunnel`, proxy: c.proxy, samples: [], unit: 'KiB', better: 'lower', skipped: why });
    } finally {
      if (fresh !== undefined) await stopProcess(fresh.proc);
    }
  }
  return rows;
}
