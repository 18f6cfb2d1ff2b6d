// Child-process helpers for tests: bounded runs, tracked long-lived children, line readers.
// Node builtins only. Every wait has a deadline; every child can be killed by its own pid.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Node 20 lacks Promise.withResolvers. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** true when the deadline killed it */
  timedOut: boolean;
}

export class CommandError extends Error {
  readonly code = 'ERR_TEST_COMMAND';
  constructor(
    readonly argv: readonly string[],
    readonly result: RunResult,
  ) {
    super(
      `${argv.join(' ')} -> ${result.timedOut ? 'timed out' : `exit ${result.code ?? result.signal}`}` +
        (result.stderr.trim() ? `: ${result.stderr.trim()}` : ''),
    );
  }
}

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  /** do not throw on a non-zero exit */
  allowFail?: boolean;
}

/** Run a command to completion, bounded by a deadline (default 10 s). Throws on failure unless allowFail. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = { code, signal, stdout, stderr, timedOut };
      if (!opts.allowFail && (code !== 0 || timedOut)) reject(new CommandError([cmd, ...args], result));
      else resolve(result);
    });
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');
  });
}

export interface LineWaiter {
  (line: string): boolean;
}

/**
 * A long-lived child whose stdout is read as lines. Started in its own process group so that
 * kill() reaches anything it started; kill() is idempotent.
 */
export class Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly lines: string[] = [];
  readonly stderrLines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters = new Set<{ match: LineWaiter; d: Deferred<string> }>();
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    readonly argv: readonly string[],
    opts: SpawnOptions = {},
    { lines = true }: { lines?: boolean } = {},
  ) {
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
    if (this.proc.pid === undefined) throw new Error(`could not spawn ${argv.join(' ')}`);
    this.pid = this.proc.pid;
    const ed = deferred<{ code: number | null; signal: NodeJS.Signals | null }>();
    this.exited = ed.promise;
    this.proc.on('error', () => {});
    // 'close', not 'exit': every stdout line has been read by then
    this.proc.on('close', (code, signal) => {
      this.exitInfo = { code, signal };
      ed.resolve({ code, signal });
      for (const w of this.waiters) w.d.reject(new Error(`${this.describe()} exited (${code ?? signal}) before the expected line`));
      this.waiters.clear();
    });
    if (lines) this.readLines();
    createInterface({ input: this.proc.stderr! }).on('line', (line) => this.stderrLines.push(line));
  }

  private readLines(): void {
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      this.lines.push(line);
      for (const w of this.waiters) {
        if (w.match(line)) {
          this.waiters.delete(w);
          w.d.resolve(line);
        }
      }
    });
  }

  describe(): string {
    return `[${this.pid}] ${this.argv.join(' ')}`;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** Resolve with the first stdout line (already seen or future) that matches; reject at the deadline or exit. */
  waitForLine(match: LineWaiter, timeoutMs: number, what = 'a matching line'): Promise<string> {
    const seen = this.lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    if (!this.running) return Promise.reject(new Error(`${this.describe()} has exited; never printed ${what}`));
    const w = { match, d: deferred<string>() };
    this.waiters.add(w);
    const timer = setTimeout(() => {
      if (this.waiters.delete(w)) {
        const tail = [...this.lines.slice(-5), ...this.stderrLines.slice(-5)].join('\n  ');
        w.d.reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.describe()}\n  ${tail}`));
      }
    }, timeoutMs);
    return w.d.promise.finally(() => clearTimeout(timer));
  }

  /** Stdout lines parsed as JSON (lines that are not JSON are skipped). */
  jsonLines<T = Record<string, unknown>>(): T[] {
    const out: T[] = [];
    for (const l of this.lines) {
      try {
        out.push(JSON.parse(l) as T);
      } catch {
        /* not JSON */
      }
    }
    return out;
  }

  /** SIGTERM the process group, SIGKILL after graceMs. Idempotent; resolves once it has exited. */
  async kill(graceMs = 2000): Promise<void> {
    if (!this.running) return;
    signalGroup(this.pid, 'SIGTERM');
    const t = setTimeout(() => signalGroup(this.pid, 'SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
    // anything left in the group (it was started detached: the group id is our pid)
    signalGroup(this.pid, 'SIGKILL', false);
  }

  /** Synchronous last-resort kill (signal handlers, process 'exit'). */
  killSync(): void {
    if (this.running) signalGroup(this.pid, 'SIGKILL');
  }
}

function signalGroup(pid: number, sig: NodeJS.Signals, orLeader = true): void {
  try {
    process.kill(-pid, sig);
  } catch {
    if (!orLeader) return;
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `probe` until it returns a value other than undefined, or fail at the deadline saying what was missing. */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  opts: { timeoutMs: number; intervalMs?: number; what: string },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}` + (lastErr ? ` (last error: ${String(lastErr)})` : ''));
    }
    await delay(opts.intervalMs ?? 50);
  }
}
