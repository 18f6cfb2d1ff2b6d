// `npm run bench`: holdfast against Dante, microsocks and tinyproxy (and a bare Node relay as
// the floor), all on loopback. See bench/README.md.
//   node dist/bench/run.js [--quick] [--only=bulk,rate,latency,pageload,memory] [--rounds=N]
//                          [--proxies=dante,microsocks,tinyproxy,node-floor,holdfast-base,holdfast] [--keep]
//                          [--split-cpus]
//   HOLDFAST_BENCH_BASE=/other/dist/src/cli.js adds holdfast-base: another build, same rounds
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { bulk } from './bulk.bench.js';
import type { Ctx, Settings } from './common.js';
import { latency } from './latency.bench.js';
import { memory } from './memory.bench.js';
import { pageload } from './pageload.bench.js';
import { killAllNow, logTail, NOFILE, startProcess, stopAll } from './procs.js';
import { startProxies, type ProxyName } from './proxies.js';
import { rate } from './rate.bench.js';
import { renderGoals } from './goals.js';
import { renderTable, type Row } from './stats.js';

const SCENARIOS = { bulk, rate, latency, pageload, memory } as const;
type ScenarioName = keyof typeof SCENARIOS;
const ALL_PROXIES: readonly ProxyName[] = ['dante', 'microsocks', 'tinyproxy', 'node-floor', 'holdfast-base', 'holdfast'];

function usage(msg?: string): never {
  if (msg !== undefined) process.stderr.write(`${msg}\n`);
  process.stderr.write(
    'usage: node dist/bench/run.js [--quick] [--only=bulk,rate,latency,pageload,memory] [--rounds=N]\n' +
      `       [--proxies=${ALL_PROXIES.join(',')}] [--keep] [--split-cpus]\n` +
      '  --split-cpus  every proxy on the last CPU, the bench (clients, curl) and the sink on the others\n',
  );
  process.exit(msg === undefined ? 0 : 2);
}

interface Args {
  settings: Settings;
  only: ScenarioName[];
  proxies: Set<ProxyName>;
  keep: boolean;
  splitCpus: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  let quick = false;
  let keep = false;
  let splitCpus = false;
  let rounds: number | undefined;
  let only: ScenarioName[] = Object.keys(SCENARIOS) as ScenarioName[];
  // holdfast-base (another build, for a before/after in the same rounds) only when it is named
  let proxies = new Set<ProxyName>(ALL_PROXIES.filter((p) => p !== 'holdfast-base' || process.env.HOLDFAST_BENCH_BASE));
  for (const a of argv) {
    const [k, v] = a.split('=', 2);
    if (k === '--quick') quick = true;
    else if (k === '--keep') keep = true;
    else if (k === '--split-cpus') splitCpus = true;
    else if (k === '--help' || k === '-h') usage();
    else if (k === '--rounds' && Number(v) >= 1) rounds = Math.min(50, Math.floor(Number(v)));
    else if (k === '--only' && v !== undefined) {
      only = v.split(',').filter(Boolean) as ScenarioName[];
      for (const s of only) if (!(s in SCENARIOS)) usage(`unknown scenario: ${s}`);
    } else if (k === '--proxies' && v !== undefined) {
      proxies = new Set(v.split(',').filter(Boolean) as ProxyName[]);
      for (const p of proxies) if (!ALL_PROXIES.includes(p)) usage(`unknown proxy: ${p}`);
    } else usage(`unknown argument: ${a}`);
  }
  const settings: Settings = quick
    ? { quick, rounds: rounds ?? 3, bulkBytes: 256 * 2 ** 20, rateSeconds: 1, rateConcurrency: 64, rateFlowBytes: 1024, rtts: 300, newConns: 200, idleFlows: 20, pageLoads: 5, pageFlows: 50, tunnels: 2000 }
    : { quick, rounds: rounds ?? 5, bulkBytes: 2 ** 30, rateSeconds: 3, rateConcurrency: 64, rateFlowBytes: 1024, rtts: 1000, newConns: 1000, idleFlows: 60, pageLoads: 20, pageFlows: 50, tunnels: 10_000 };
  return { settings, only, proxies, keep, splitCpus };
}

/** The CPUs this process may run on (its affinity list), expanded: `0-2,5` is [0, 1, 2, 5]. */
function allowedCpus(): number[] {
  const r = spawnSync('taskset', ['-p', '-c', String(process.pid)], { encoding: 'utf8' });
  const list = /:\s*([0-9,-]+)\s*$/.exec(r.stdout ?? '')?.[1];
  if (r.status !== 0 || list === undefined) throw new Error(`taskset -p: ${r.error?.message ?? (r.stderr || r.stdout).trim()}`);
  return list.split(',').flatMap((part) => {
    const [a, b = a] = part.split('-').map(Number);
    return Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
}

/**
 * `--split-cpus`: the proxies get the last allowed CPU to themselves; this process (the clients,
 * curl) and the sink the others. On a machine with fewer cores than busy processes, a proxy that
 * shares a core with its client or the sink is timed partly by the scheduler's placement (issue
 * 17, eighth pass): this takes that out. A multi-threaded proxy gets one core, not all.
 */
function splitCpus(): { proxies: string; others: string } {
  const cpus = allowedCpus();
  if (cpus.length < 2) throw new Error(`--split-cpus needs at least 2 CPUs; this process may use ${cpus.join(',')}`);
  const placement = { proxies: String(cpus[cpus.length - 1]), others: cpus.slice(0, -1).join(',') };
  const r = spawnSync('taskset', ['-a', '-p', '-c', placement.others, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset -a -p -c ${placement.others}: ${r.error?.message ?? r.stderr.trim()}`);
  return placement;
}

function openFileLimits(): { soft: number; hard: number } {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const f = line?.split(/\s+/) ?? [];
  return { soft: Number(f[3] ?? 0), hard: Number(f[4] ?? 0) };
}

function openFileLimit(): number {
  return openFileLimits().soft;
}

/** Can `ulimit -n` go up here: below the hard limit, or past it with CAP_SYS_RESOURCE (bit 24)? */
function canRaiseFileLimit(): boolean {
  const { soft, hard } = openFileLimits();
  if (hard > soft) return true;
  const cap = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return cap !== null && (BigInt(`0x${cap[1]}`) & (1n << 24n)) !== 0n;
}

/** The client side holds one fd per tunnel: re-exec once under a raised `ulimit -n` if needed. */
async function ensureFileLimit(): Promise<void> {
  if (openFileLimit() >= 30_000 || process.env.HOLDFAST_BENCH_REEXEC === '1' || !canRaiseFileLimit()) return;
  const script = `ulimit -n ${NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`;
  const child = spawn('bash', ['-c', script, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, HOLDFAST_BENCH_REEXEC: '1' },
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  const code = await new Promise<number>((resolve) => child.once('exit', (c, s) => resolve(c ?? (s === null ? 1 : 128))));
  process.exit(code);
}

/** TCP sockets in TIME_WAIT, host-wide (/proc/net/sockstat): each may hold an ephemeral port. */
function timeWait(): number {
  const m = /TCP: .*\btw (\d+)/.exec(readFileSync('/proc/net/sockstat', 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

function cpuModel(): string {
  const line = readFileSync('/proc/cpuinfo', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('model name'));
  return line?.split(':')[1]?.trim() ?? 'unknown';
}

/** Start the sink in its own process (`{"raw":P,"http":P}` on its stdout). */
async function startSinkProcess(dir: string, cpus?: string): Promise<{ raw: number; http: number }> {
  const proc = startProcess('sink', [process.execPath, new URL('./sink.js', import.meta.url).pathname], {
    logPath: join(dir, 'sink.log'),
    pipeStdout: true,
    cpus,
  });
  const stdout = proc.child.stdout;
  if (stdout === null) throw new Error('sink: no stdout');
  const rl = createInterface({ input: stdout });
  try {
    const line = await Promise.race([
      new Promise<string>((resolve) => rl.once('line', resolve)),
      proc.exited.then(() => Promise.reject(new Error(`sink exited:\n${logTail(proc)}`))),
      new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('sink: not ready in 10 s')), 10_000).unref()),
    ]);
    return JSON.parse(line) as { raw: number; http: number };
  } finally {
    rl.close();
  }
}

async function main(): Promise<number> {
  await ensureFileLimit();
  const { settings, only, proxies, keep, splitCpus: split } = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const log = (s: string): void => void process.stdout.write(`${s}\n`);

  // Everything we start dies with us: on exit (sync), on signals, and after a hard deadline.
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: stopping\n`);
      killAllNow();
      process.exit(130);
    });
  const hardLimitMs = (settings.quick ? 6 : 20) * 60_000;
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: over ${hardLimitMs / 60_000} min, giving up\n`);
    killAllNow();
    process.exit(3);
  }, hardLimitMs);

  const dir = mkdtempSync(join(tmpdir(), 'hf-bench-'));
  chmodSync(dir, 0o755); // Dante's unprivileged user reads its lock files here (TMPDIR)
  let code = 0;
  try {
    log(`holdfast bench: ${new Date().toISOString()}`);
    log(`node ${process.version} | ${cpuModel()} × ${availableParallelism()} | Linux ${release()} | open files ${openFileLimit()}`);
    // Each tunnel costs the proxy two fds; without CAP_SYS_RESOURCE `ulimit -n` cannot go past
    // the hard limit, so the tunnel count shrinks to fit rather than failing at EMFILE.
    const fit = Math.floor((openFileLimit() - 512) / 2);
    if (settings.tunnels > fit) {
      log(`memory: ${settings.tunnels} tunnels do not fit under the open-file limit ${openFileLimit()} (2 fds each in the proxy): using ${fit}`);
      settings.tunnels = fit;
    }
    log(`settings: ${JSON.stringify(settings)}`);
    log(`load average at start: ${loadavg().map((x) => x.toFixed(2)).join(' ')} (other work on this machine skews every figure)`);
    const tw = timeWait();
    log(`TCP TIME_WAIT at start: ${tw}${tw > 10_000 ? ' (many: a proxy that binds 127.0.0.1:0 before connect, like Dante, may run out of ephemeral ports)' : ''}`);
    const placement = split ? splitCpus() : undefined;
    if (placement) log(`CPUs (--split-cpus): every proxy on ${placement.proxies}; the bench, its clients and the sink on ${placement.others}`);
    const sink = await startSinkProcess(dir, placement?.others);
    const { running, skipped } = await startProxies(dir, proxies, log, placement?.proxies);
    for (const p of running) log(`  ${p.name.padEnd(10)} 127.0.0.1:${p.port}  ${p.version}`);
    for (const s of skipped) log(`  ${s.name.padEnd(10)} skipped: ${s.why}`);
    const ctx: Ctx = { settings, sink, proxies: running, dir, log };
    const rows: Row[] = [];
    for (const name of only) {
      const t0 = Date.now();
      try {
        rows.push(...(await SCENARIOS[name](ctx)));
      } catch (e) {
        code = 1;
        log(`${name}: FAILED: ${(e as Error).stack ?? e}`);
        for (const p of running) if (p.proc.exitedAlready) log(`${p.name} log:\n${logTail(p.proc)}`);
      }
      log(`  (${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    }
    for (const s of skipped) rows.push({ scenario: '(all)', proxy: s.name, samples: [], unit: '', better: 'higher', skipped: s.why });
    // a before/after in the same rounds: holdfast's rows paired with the other build's too
    if (running.some((p) => p.name === 'holdfast-base')) for (const r of rows) if (r.proxy === 'holdfast') r.base = 'holdfast-base';
    for (const p of running)
      if (p.proc.exitedAlready) {
        code = 1; // a proxy that died mid-bench is a finding, not a skipped row
        log(`\n${p.name} exited during the bench (${p.proc.exitHow}); last lines of ${p.proc.logPath}:\n${logTail(p.proc, 30)}`);
      }
    log('');
    log(`## holdfast bench, ${new Date().toISOString().slice(0, 10)}: node ${process.version}, ${cpuModel()} × ${availableParallelism()}, Linux ${release()}${placement ? `; --split-cpus (proxies on CPU ${placement.proxies})` : ''}`);
    log('ratios: SOCKS5 rows against dante, HTTP rows against tinyproxy; ↑ higher is better, ↓ lower is better;');
    log('paired: the median over rounds of the row over its ref in the same round (their range in brackets); drift between rounds cancels out.');
    log(`spread: rounds × (max - min) / median. Total ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}, TIME_WAIT ${timeWait()}.`);
    log('');
    log(renderTable(rows));
    const goals = renderGoals(rows);
    if (goals !== '') {
      log('');
      log("## issue 17's goals: holdfast's figure over the peer's, by the medians and paired by round; node-floor's beside it");
      log('');
      log(goals);
    }
  } catch (e) {
    code = 1;
    log(`bench FAILED: ${(e as Error).stack ?? e}`);
  } finally {
    clearTimeout(watchdog);
    await stopAll();
    if (keep || code !== 0) log(`logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  return code;
}

process.exit(await main());
