// bulk: one large download with curl to /dev/null, through each proxy in turn, round after
// round (common.ts roundOrder: each in every place, after every other, alike), so drift hits all alike. MiB/s from curl's own size/time_total; the
// proxy's CPU seconds per GiB from /proc (what a 2-core box really pays for).
import { spawn } from 'node:child_process';
import { assertAlive } from './proxies.js';
import { LABEL, REF, casesFor, cpuOf, interleaved, key, type Case, type Ctx } from './common.js';
import { fmt, median, type Row } from './stats.js';

const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(https?|all|no|ftp)_proxy$/i.test(k)),
);

function curlArgs(c: Case, url: string): string[] {
  const common = ['-s', '-S', '-o', '/dev/null', '--max-time', '120', '-w', '%{http_code} %{size_download} %{time_total}'];
  const port = c.running?.port ?? 0;
  switch (c.protocol) {
    case 'direct':
      return [...common, '--noproxy', '*', url];
    case 'socks5':
      return [...common, '--socks5', `127.0.0.1:${port}`, url];
    case 'connect':
      return [...common, '-p', '-x', `http://127.0.0.1:${port}`, url];
    case 'forward':
      return [...common, '-x', `http://127.0.0.1:${port}`, url];
  }
}

interface Run {
  seconds: number;
  bytes: number;
  cpuSec: number;
}

function curl(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'], env: CLEAN_ENV });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`curl ${args.slice(8).join(' ')}: ${signal ?? `exit ${code}`} ${err.trim()}`));
    });
  });
}

async function once(ctx: Ctx, c: Case, bytes: number): Promise<Run> {
  if (c.running !== undefined) assertAlive(c.running);
  const url = `http://127.0.0.1:${ctx.sink.http}/bytes?n=${bytes}`;
  const cpu0 = cpuOf(c);
  const out = await curl(curlArgs(c, url), 150_000);
  const cpuSec = cpuOf(c) - cpu0;
  const [status, size, time] = out.trim().split(' ');
  if (status !== '200' || Number(size) !== bytes) throw new Error(`${key(c)}: HTTP ${status}, ${size} of ${bytes} bytes`);
  return { seconds: Number(time), bytes, cpuSec };
}

export async function bulk(ctx: Ctx): Promise<Row[]> {
  const { rounds, bulkBytes } = ctx.settings;
  const cases = casesFor(ctx, ['socks5', 'connect', 'forward'], true);
  const warm = Math.min(bulkBytes, 64 * 1024 * 1024);
  ctx.log(`bulk: ${cases.length} cases × ${rounds} rounds of ${bulkBytes / 2 ** 20} MiB (warm-up ${warm / 2 ** 20} MiB each)`);
  const { runs, failed } = await interleaved(ctx, cases, {
    warm: (c) => once(ctx, c, warm),
    run: (c) => once(ctx, c, bulkBytes),
    said: (_c, run) => fmt(run.bytes / run.seconds / 2 ** 20),
    unit: 'MiB/s',
  });
  return cases.map((c): Row => {
    const list = runs.get(key(c)) ?? [];
    const scenario = `bulk ${LABEL[c.protocol]}`;
    const why = failed.get(key(c));
    if (why !== undefined && list.length === 0) return { scenario, proxy: c.proxy, samples: [], unit: 'MiB/s', better: 'higher', skipped: why };
    const cpu = list.map((x) => x.cpuSec / (x.bytes / 2 ** 30));
    const cpuPerGiB = median(cpu);
    return {
      scenario,
      proxy: c.proxy,
      samples: list.map((x) => x.bytes / x.seconds / 2 ** 20),
      unit: 'MiB/s',
      better: 'higher',
      ...(c.protocol === 'direct' ? {} : { ref: REF[c.protocol], cpu }),
      note: [c.protocol === 'direct' ? 'the floor: curl ⇄ sink' : `proxy CPU ${fmt(cpuPerGiB)} s/GiB`, why === undefined ? '' : `failed later: ${why}`]
        .filter(Boolean)
        .join('; '),
    };
  });
}
