// Child processes of the bench: each in its own process group, so a proxy's forked workers
// (Dante) die with it; all killed on exit, also on failure or a signal. Plus /proc readers for
// a process group's memory and CPU time.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Managed {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  readonly logPath: string;
  /** Resolves when the group leader has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitedAlready: boolean;
  /** How it ended, once it has: `exit 1`, `SIGKILL`. */
  exitHow?: string;
}

const live = new Set<Managed>();

/** Highest open-file limit we ask for: the 10,000-tunnel scenario needs 2 fds per tunnel per proxy. */
export const NOFILE = 65536;

/**
 * Start argv under `bash -c 'ulimit -n ...; exec ...'` in a new process group, stderr (and stdout
 * unless piped) appended to logPath. `exec` keeps the pid, so pid = group id = the program.
 * `cpus` (a taskset list, `1` or `0-2`): the program and everything it starts run only there.
 */
export function startProcess(
  name: string,
  argv: readonly string[],
  opts: { logPath: string; env?: NodeJS.ProcessEnv; pipeStdout?: boolean; cwd?: string; cpus?: string },
): Managed {
  if (opts.cpus !== undefined && !/^[0-9][0-9,-]*$/.test(opts.cpus)) throw new Error(`${name}: not a CPU list: ${opts.cpus}`);
  const pin = opts.cpus === undefined ? '' : `taskset -c ${opts.cpus} `;
  const script = `ulimit -n ${NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec ${pin}"$0" "$@"`;
  const fd = openSync(opts.logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn('bash', ['-c', script, ...argv], {
      detached: true,
      stdio: ['ignore', opts.pipeStdout === true ? 'pipe' : fd, fd],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`${name}: spawn failed (${argv[0]})`);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      m.exitedAlready = true;
      m.exitHow = signal ?? `exit ${code}`;
      resolve({ code, signal });
    });
    child.once('error', () => {
      m.exitedAlready = true;
      resolve({ code: null, signal: null });
    });
  });
  const m: Managed = { name, pid: child.pid, child, logPath: opts.logPath, exited, exitedAlready: false };
  live.add(m);
  return m;
}

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** SIGTERM the group, wait up to graceMs, then SIGKILL whatever is left of it. Idempotent. */
export async function stopProcess(m: Managed, graceMs = 3000): Promise<void> {
  if (!live.has(m)) return;
  killGroup(m.pid, 'SIGTERM');
  const ac = new AbortController();
  await Promise.race([m.exited, sleep(graceMs, undefined, { signal: ac.signal }).catch(() => undefined)]);
  ac.abort();
  killGroup(m.pid, 'SIGKILL'); // forked workers that outlived their leader
  live.delete(m);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((m) => stopProcess(m)));
}

/** Last resort on exit: synchronous, so it also runs from process.on('exit'). */
export function killAllNow(): void {
  for (const m of live) killGroup(m.pid, 'SIGKILL');
  live.clear();
}

export function logTail(m: Managed, lines = 15): string {
  try {
    return readFileSync(m.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Connect to 127.0.0.1:port until it accepts, the process dies, or the deadline passes. */
export async function waitListening(m: Managed, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (m.exitedAlready) throw new Error(`${m.name} exited before listening:\n${logTail(m)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        s.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${m.name} not listening on 127.0.0.1:${port} after ${timeoutMs} ms:\n${logTail(m)}`);
    await sleep(50);
  }
}

// ---------- /proc readers ----------

interface StatLine {
  pid: number;
  pgrp: number;
  /** utime + stime + cutime + cstime, in clock ticks */
  ticks: number;
  /** stime + cstime: the part of ticks spent in the kernel */
  sysTicks: number;
  threads: number;
}

function readStat(pid: number): StatLine | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the parenthesised command: state ppid pgrp ... (field 3 is index 0).
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    pid,
    pgrp: Number(f[2]),
    ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
    sysTicks: Number(f[12]) + Number(f[14]),
    threads: Number(f[17]),
  };
}

/** Every live process whose process group is pgid. */
export function groupPids(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    const c = d.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const st = readStat(Number(d));
    if (st !== undefined && st.pgrp === pgid) out.push(st.pid);
  }
  return out;
}

function kbField(text: string, key: string): number {
  const i = text.indexOf(`${key}:`);
  if (i < 0) return 0;
  return Number.parseInt(text.slice(i + key.length + 1).trim(), 10) || 0;
}

export interface GroupUsage {
  processes: number;
  threads: number;
  /** sum of VmRSS, bytes (shared pages counted once per process) */
  rss: number;
  /** sum of Pss, bytes (shared pages divided among their users: fair for forking servers) */
  pss: number;
  /** CPU seconds, incl. reaped children */
  cpuSec: number;
  /** the part of cpuSec spent in the kernel (system calls, the loopback's TCP) */
  sysSec: number;
  fds: number;
}

const CLK_TCK = 100; // Linux USER_HZ on every mainstream architecture

export function groupUsage(pgid: number, withMemory = true): GroupUsage {
  const u: GroupUsage = { processes: 0, threads: 0, rss: 0, pss: 0, cpuSec: 0, sysSec: 0, fds: 0 };
  for (const pid of groupPids(pgid)) {
    const st = readStat(pid);
    if (st === undefined) continue;
    u.processes++;
    u.threads += st.threads;
    u.cpuSec += st.ticks / CLK_TCK;
    u.sysSec += st.sysTicks / CLK_TCK;
    if (!withMemory) continue;
    try {
      u.rss += kbField(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS') * 1024;
      u.pss += kbField(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss') * 1024;
      u.fds += readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      // exited between listing and reading
    }
  }
  return u;
}
