// Helpers for the policy tests in the netns lab (test/netns/{ftp-affinity,cut,fallback,dns,
// happy-eyeballs}.test.ts): holdfast started in the lab's host namespace with a config file,
// its JSON log and /status; nftables rules in the routers; dnsmasq per network; a pyftpdlib
// server; timed curl runs. Everything started here is killed by t.after (and by lab.destroy()).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Lab, labTestOptions, type LabNs, type LabOptions } from './lab.js';
import type { Child, RunResult } from './proc.js';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
export const PROXY_PORT = 1080;
/** Debian's python3 (pyftpdlib is installed for it; a pyenv shim on PATH may not have it). */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
export const DNSMASQ = existsSync('/usr/sbin/dnsmasq') ? '/usr/sbin/dnsmasq' : 'dnsmasq';

/**
 * Options for a lab test that runs the built holdfast: skips with a printed reason where the lab
 * cannot run (fails under CI=true), and also when the CLI is not built or a tool is missing.
 */
export function holdfastLabOptions(timeout = 60_000, needs: { python?: string; dnsmasq?: boolean } = {}): { skip?: string; timeout?: number } {
  const base = labTestOptions({ timeout });
  if (base.skip) return base;
  let reason: string | undefined;
  if (!existsSync(CLI)) reason = `${CLI} not built (run npx tsc -p tsconfig.json)`;
  else if (needs.dnsmasq && !existsSync(DNSMASQ)) reason = 'dnsmasq not installed (Debian: dnsmasq-base)';
  else if (needs.python) {
    try {
      // synchronous probe (usable in the test's options): the module imports in Debian's python3
      execFileSync(PYTHON, ['-c', `import ${needs.python}`], { stdio: 'pipe', timeout: 10_000 });
    } catch {
      reason = `${PYTHON} cannot import ${needs.python} (Debian: python3-${needs.python})`;
    }
  }
  if (!reason) return base;
  console.log(`# ${process.env.CI === 'true' ? 'will fail (CI)' : 'skipped'}: ${reason}`);
  return process.env.CI === 'true' ? base : { ...base, skip: reason };
}

/** A lab destroyed by t.after, also on failure. */
export async function createLab(t: TestContext, opts: LabOptions = {}): Promise<Lab> {
  const lab = await Lab.create(opts);
  t.after(() => lab.destroy());
  return lab;
}

/** A temporary directory removed by t.after. */
export function tempDir(t: TestContext, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `hf-${name}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---- holdfast in the host namespace ---------------------------------------------------------------

export interface StatusFlow {
  id: number;
  kind: string;
  client: string;
  dst: string;
  ip: string | null;
  egress: string | null;
  src: string | null;
  placedBy: string | null;
  startedAt: number;
  bytesUp: number;
  bytesDown: number;
  /** times the forwarder resumed this download on a new connection */
  resumed?: number;
}

export interface StatusInterface {
  name: string;
  up?: boolean;
  carrier?: boolean;
  addresses?: string[];
  defaultRoute?: unknown;
  defaultRoutes?: unknown[];
}

export interface Status {
  interfaces: StatusInterface[];
  flows: StatusFlow[];
  totals?: { opened: number; cut: number; live: number };
  forward?: { resumes: number; resumeFailures: number };
}

export interface LogLine {
  msg: string;
  time: number;
  level: number;
  [k: string]: unknown;
}

export interface LabHoldfast {
  readonly child: Child;
  /** "127.0.0.1:1080" */
  readonly proxy: string;
  readonly configFile: string;
  status(): Promise<Status>;
  /** parsed JSON log lines so far */
  logs(): LogLine[];
  /** the first log line (past or future) matching `pred` */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs: number, what: string): Promise<LogLine>;
  /** the last lines of its stdout and stderr, for failure diagnostics */
  tail(n?: number): string;
}

function parseLog(line: string): LogLine | undefined {
  try {
    const o = JSON.parse(line) as LogLine;
    return typeof o.msg === 'string' ? o : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Start the built holdfast in the lab's host namespace with `config` (written as a file to a
 * temp dir; JSON is YAML), listening on 127.0.0.1:PROXY_PORT. Killed by t.after.
 */
export async function startLabHoldfast(t: TestContext, lab: Lab, config: Record<string, unknown>): Promise<LabHoldfast> {
  const dir = tempDir(t, 'config');
  const configFile = join(dir, 'holdfast.yaml');
  const proxy = `127.0.0.1:${PROXY_PORT}`;
  writeFileSync(configFile, JSON.stringify({ listen: [proxy], log: { level: 'info' }, ...config }, null, 2) + '\n');
  const child = lab.spawn('host', [process.execPath, CLI, 'start', '--config', configFile]);
  t.after(() => child.kill());
  await child.waitForLine((l) => parseLog(l)?.msg === 'listening', 10_000, 'holdfast "listening"');
  const status = async (): Promise<Status> => {
    const r = await lab.exec('host', 'curl', ['-sS', '--max-time', '3', `http://${proxy}/status`], { timeoutMs: 5000 });
    return JSON.parse(r.stdout) as Status;
  };
  return {
    child,
    proxy,
    configFile,
    status,
    logs: () => child.lines.map(parseLog).filter((l): l is LogLine => l !== undefined),
    async waitForLog(pred, timeoutMs, what) {
      const line = await child.waitForLine((l) => {
        const o = parseLog(l);
        return o !== undefined && pred(o);
      }, timeoutMs, what);
      return parseLog(line)!;
    },
    tail: (n = 30) => [...child.lines.slice(-n), ...child.stderrLines.slice(-10)].join('\n'),
  };
}

/** Print a multi-line block as test diagnostics. */
export function diagLines(t: TestContext, title: string, text: string): void {
  t.diagnostic(title);
  for (const l of text.split('\n')) t.diagnostic(`  ${l}`);
}

/**
 * Run `steps`; on failure print holdfast's log tail, the host's routes and the routers'
 * counters before rethrowing.
 */
export async function withDiagnostics<T>(t: TestContext, lab: Lab, hf: LabHoldfast | undefined, steps: () => Promise<T>): Promise<T> {
  try {
    return await steps();
  } catch (err) {
    if (hf) diagLines(t, 'holdfast log tail:', hf.tail());
    diagLines(t, 'host routes:', await lab.hostRoutes().catch((e: unknown) => String(e)));
    t.diagnostic(`router counters: ${JSON.stringify(await lab.counters().catch(() => ({})))}`);
    throw err;
  }
}

// ---- routers: extra nftables rules ----------------------------------------------------------------

/**
 * Insert a rule at the head of a router's (or the server's) forward chain in the lab's
 * `inet hf` table, with a counter and a comment (lab.counters() reports it as `<ns>.<comment>`).
 */
export async function insertForwardRule(lab: Lab, ns: 'r1' | 'r2', match: string, comment: string): Promise<void> {
  await lab.exec(ns, 'nft', ['insert', 'rule', 'inet', 'hf', 'forward', ...match.split(' ').filter(Boolean), 'counter', 'drop', 'comment', `"${comment}"`]);
}

/** A rule's packet counter in a lab router (by its comment). */
export async function ruleCount(lab: Lab, ns: 'r1' | 'r2', comment: string): Promise<number> {
  return (await lab.counters())[`${ns}.${comment}`] ?? 0;
}

// ---- dnsmasq ----------------------------------------------------------------------------------------

export interface Dnsmasq {
  readonly child: Child;
  /** query lines dnsmasq logged: "query[A] svc.test from 10.1.1.2" */
  queries(): string[];
}

/**
 * dnsmasq in a lab namespace, answering only the given names (no upstream, no hosts file),
 * logging every query to stderr. Killed by t.after.
 */
export async function startDnsmasq(
  t: TestContext,
  lab: Lab,
  ns: LabNs,
  listen: readonly string[],
  records: Readonly<Record<string, readonly string[]>>,
): Promise<Dnsmasq> {
  const args = [
    DNSMASQ,
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--bind-interfaces',
    '--user=root',
    '--pid-file',
    '--port=53',
    '--log-queries',
    '--log-facility=-',
    ...listen.map((a) => `--listen-address=${a}`),
    '--local-ttl=1',
  ];
  for (const [name, ips] of Object.entries(records)) {
    // --host-record answers A and AAAA for the name (NODATA for a family it lacks) without upstream
    args.push(`--host-record=${name},${ips.join(',')},1`);
  }
  const child = lab.spawn(ns, args);
  t.after(() => child.kill());
  // dnsmasq logs "started, version ..." once its sockets are bound
  await pollStderr(child, (l) => /started, version/.test(l), 5000, 'dnsmasq "started"');
  return { child, queries: () => child.stderrLines.filter((l) => /query\[/.test(l)) };
}

/** Wait for a stderr line (dnsmasq and python log there). */
export async function pollStderr(child: Child, match: (l: string) => boolean, timeoutMs: number, what: string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = child.stderrLines.find(match);
    if (hit !== undefined) return hit;
    if (!child.running) throw new Error(`${child.describe()} exited before ${what}:\n  ${child.stderrLines.slice(-10).join('\n  ')}`);
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}:\n  ${child.stderrLines.slice(-10).join('\n  ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- pyftpdlib --------------------------------------------------------------------------------------

/** The FTP server: pyftpdlib's defaults (permit_foreign_addresses = False), events as JSON lines. */
const FTP_SERVER_PY = String.raw`
import json, os, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, PassiveDTP, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer

host, port, root, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

class DTP(PassiveDTP):
    def handle_accepted(self, sock, addr):
        emit(event="data-connection", peer=addr[0], control=self.cmd_channel.remote_ip)
        return super().handle_accepted(sock, addr)

class Throttled(ThrottledDTPHandler):
    write_limit = rate  # bytes per second the server sends on each data connection

class Handler(FTPHandler):
    passive_dtp = DTP
    dtp_handler = Throttled if rate > 0 else FTPHandler.dtp_handler
    def on_connect(self):
        emit(event="connect", peer=self.remote_ip)
    def respond(self, resp, logfun=None):
        emit(event="reply", peer=self.remote_ip, reply=resp)
        return super().respond(resp) if logfun is None else super().respond(resp, logfun)
    def ftp_RETR(self, file):
        emit(event="retr", file=os.path.basename(file), peer=self.remote_ip)
        return super().ftp_RETR(file)
    def on_file_sent(self, file):
        emit(event="sent", file=os.path.basename(file), peer=self.remote_ip)
    def on_incomplete_file_sent(self, file):
        emit(event="incomplete", file=os.path.basename(file), peer=self.remote_ip)

assert Handler.permit_foreign_addresses is False, "pyftpdlib default changed"
auth = DummyAuthorizer()
auth.add_anonymous(root)
Handler.authorizer = auth
server = FTPServer((host, port), Handler)
emit(event="listening", host=host, port=port, permitForeignAddresses=Handler.permit_foreign_addresses)
server.serve_forever(handle_exit=True)
`;

export interface FtpEvent {
  event: string;
  peer?: string;
  control?: string;
  file?: string;
  reply?: string;
  [k: string]: unknown;
}

export interface FtpServer {
  readonly child: Child;
  events(): FtpEvent[];
  waitFor(pred: (e: FtpEvent) => boolean, timeoutMs: number, what: string): Promise<FtpEvent>;
}

/** pyftpdlib on host:port serving `root` read-only to anonymous; data sent at `rate` bytes/s (0 = unpaced). */
export async function startFtpServer(t: TestContext, lab: Lab, host: string, port: number, root: string, rate = 0): Promise<FtpServer> {
  const child = lab.spawn('server', [PYTHON, '-u', '-c', FTP_SERVER_PY, host, String(port), root, String(rate)]);
  t.after(() => child.kill());
  const parse = (l: string): FtpEvent | undefined => {
    try {
      return JSON.parse(l) as FtpEvent;
    } catch {
      return undefined;
    }
  };
  const server: FtpServer = {
    child,
    events: () => child.lines.map(parse).filter((e): e is FtpEvent => e !== undefined),
    async waitFor(pred, timeoutMs, what) {
      const line = await child.waitForLine((l) => {
        const e = parse(l);
        return e !== undefined && pred(e);
      }, timeoutMs, what);
      return parse(line)!;
    },
  };
  await server.waitFor((e) => e.event === 'listening', 10_000, 'pyftpdlib listening');
  return server;
}

// ---- curl -------------------------------------------------------------------------------------------

export interface TimedRun extends RunResult {
  startedAt: number;
  endedAt: number;
  elapsedMs: number;
}

/** Run curl in the host namespace (always with --max-time), timing it from here. */
export async function curlIn(lab: Lab, args: readonly string[], maxTimeS: number): Promise<TimedRun> {
  const startedAt = Date.now();
  const r = await lab.exec('host', 'curl', ['-sS', '-g', '--max-time', String(maxTimeS), ...args], {
    allowFail: true,
    timeoutMs: maxTimeS * 1000 + 5000,
  });
  const endedAt = Date.now();
  return { ...r, startedAt, endedAt, elapsedMs: endedAt - startedAt };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Assert a curl run succeeded, naming its stderr. */
export function assertCurlOk(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what}: curl exit ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.trim()}`);
}

/** A curl download in the host namespace, its output hashed here as it arrives (-N: unbuffered). */
export interface DownloadResult {
  readonly tag: string;
  readonly code: number | null;
  readonly bytes: number;
  readonly sha256: string;
  readonly stderr: string;
  readonly startedAt: number;
  readonly endedAt: number;
}

export class Download {
  readonly child: Child;
  readonly startedAt = Date.now();
  bytes = 0;
  /** [time, bytes so far] per chunk */
  readonly samples: Array<[number, number]> = [];
  readonly result: Promise<DownloadResult>;

  constructor(
    t: TestContext,
    lab: Lab,
    readonly tag: string,
    readonly url: string,
    curlArgs: readonly string[],
  ) {
    assert.ok(curlArgs.includes('--max-time'), `${tag}: every curl has --max-time`);
    this.child = lab.spawn('host', ['curl', '-sS', '-g', '-N', ...curlArgs, url], { lines: false });
    t.after(() => this.child.kill());
    const hash = createHash('sha256');
    this.child.proc.stdout!.on('data', (b: Buffer) => {
      hash.update(b);
      this.bytes += b.length;
      this.samples.push([Date.now(), this.bytes]);
    });
    this.result = this.child.exited.then(({ code }) => ({
      tag,
      code,
      bytes: this.bytes,
      sha256: hash.digest('hex'),
      stderr: this.child.stderrLines.join('\n'),
      startedAt: this.startedAt,
      endedAt: Date.now(),
    }));
  }

  /** Bytes received by time t. */
  bytesAt(t: number): number {
    let b = 0;
    for (const [ts, n] of this.samples) {
      if (ts > t) break;
      b = n;
    }
    return b;
  }

  /** Time of the last byte received. */
  lastByteAt(): number | null {
    return this.samples.at(-1)?.[0] ?? null;
  }
}

/**
 * Make a lab router drop, silently, every packet addressed to itself from the host side (DNS,
 * ping; ARP still answers): with insertForwardRule(.., '', ..) it is a dead router on a live link.
 */
export async function dropRouterInput(lab: Lab, ns: 'r1' | 'r2', comment: string): Promise<void> {
  await lab.exec(ns, 'nft', ['-f', '-'], {
    input: [
      'table inet hf {',
      '  chain input {',
      '    type filter hook input priority filter; policy accept;',
      `    iifname "host" counter drop comment "${comment}"`,
      '  }',
      '}',
    ].join('\n') + '\n',
  });
}
