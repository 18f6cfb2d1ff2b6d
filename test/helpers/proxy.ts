// A real holdfast, in-process, on an ephemeral loopback port, with its log lines captured as
// parsed JSON (pino, like production; nothing is mocked but the log destination).
import { once } from 'node:events';
import { Writable } from 'node:stream';
import type { TestContext } from 'node:test';
import { pino } from 'pino';
import { startHoldfast, type Holdfast, type StartOptions } from '../../src/app.js';
import { parseConfig, type Config } from '../../src/config.js';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export class LogSink extends Writable {
  readonly lines: LogLine[] = [];
  #waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const text of chunk.toString('utf8').split('\n')) {
      if (!text) continue;
      const line = JSON.parse(text) as LogLine;
      this.lines.push(line);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(line)) return true;
        w.resolve(line);
        return false;
      });
    }
    cb();
  }
  /** The first line (past or future) matching pred, or reject after timeoutMs. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 5000): Promise<LogLine> {
    const hit = this.lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      this.#waiters.push(w);
      setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        reject(new Error(`no log line matched within ${timeoutMs} ms; saw: ${this.lines.map((l) => l.msg).join(', ')}`));
      }, timeoutMs).unref();
    });
  }
  byMsg(msg: string): LogLine[] {
    return this.lines.filter((l) => l.msg === msg);
  }
}

export interface TestProxy {
  readonly hf: Holdfast;
  readonly port: number;
  readonly host: string;
  readonly logs: LogSink;
  readonly url: string;
}

/** Start holdfast on 127.0.0.1:0 (or `listen`), closed by t.after; `start`: startHoldfast's other options. */
export async function startProxy(
  t: TestContext,
  overrides: Record<string, unknown> = {},
  listen = ['127.0.0.1:0'],
  start: Omit<StartOptions, 'log'> = {},
): Promise<TestProxy> {
  const cfg: Config = parseConfig({ listen, log: { level: 'debug' }, ...overrides }, 'test');
  const logs = new LogSink();
  const log = pino({ level: 'debug' }, logs);
  const hf = await startHoldfast(cfg, { ...start, log });
  t.after(() => hf.close());
  const b = hf.listeners[0].bound();
  return {
    hf,
    port: b.port,
    host: b.host,
    logs,
    url: `http://${b.host.includes(':') ? `[${b.host}]` : b.host}:${b.port}`,
  };
}

/** Wait until the flow table is empty (flows close asynchronously after sockets close). */
export async function flowsDrained(hf: Holdfast, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (hf.flows.size > 0) {
    if (Date.now() > deadline) throw new Error(`${hf.flows.size} flow(s) still open: ${JSON.stringify(hf.flows.list())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export { once };
