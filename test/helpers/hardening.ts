// Helpers for the hardening tests (auth, limits, exposure, lifecycle, fuzz): an in-process
// holdfast with a chosen resolver, raw SOCKS5 login bytes, raw HTTP exchanges, and a peer network
// namespace (a veth pair out of the test namespace) for clients that are really not loopback.
import { once } from 'node:events';
import { connect, isIP, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { pino } from 'pino';
import { startHoldfast, type Holdfast } from '../../src/app.js';
import { parseConfig, type Config } from '../../src/config.js';
import type { Destination, Target } from '../../src/contracts.js';
import type { Resolver } from '../../src/dns.js';
import { DnsError } from '../../src/errors.js';
import { Child, run, type RunOptions, type RunResult } from './proc.js';
import { LogSink } from './proxy.js';
import { readN } from './socks-client.js';

export interface Hf {
  readonly hf: Holdfast;
  readonly port: number;
  readonly host: string;
  readonly logs: LogSink;
  readonly url: string;
}

/**
 * Start holdfast in-process (closed by t.after) with `overrides` on top of a loopback listener.
 * `resolver` replaces name resolution (address literals included: the resolver sees every
 * destination), so tests can make names lead where they want without DNS.
 */
export async function startHf(
  t: TestContext,
  overrides: Record<string, unknown> = {},
  opts: { resolver?: Resolver; level?: 'debug' | 'info' | 'silent' } = {},
): Promise<Hf> {
  const cfg: Config = parseConfig({ listen: ['127.0.0.1:0'], ...overrides, log: { level: opts.level ?? 'debug' } }, 'test');
  const logs = new LogSink();
  const log = pino({ level: opts.level ?? 'debug' }, logs);
  const hf = await startHoldfast(cfg, { log, ...(opts.resolver ? { resolver: opts.resolver } : {}) });
  t.after(() => hf.close());
  const b = hf.listeners[0].bound();
  const h = b.host.includes(':') ? `[${b.host}]` : b.host;
  return { hf, port: b.port, host: b.host, logs, url: `http://${h}:${b.port}` };
}

/** Names from `names` (name -> IP); address literals as themselves; anything else: HF_DNS. */
export function fixedResolver(names: Record<string, string>): Resolver {
  return {
    async resolve(dst: Destination): Promise<Target[]> {
      const ip = isIP(dst.host) ? dst.host : names[dst.host.toLowerCase()];
      if (!ip) throw new DnsError(`resolve ${dst.host}: not in the test's table`);
      return [{ ip, family: isIP(ip) === 6 ? 6 : 4, port: dst.port }];
    },
  };
}

/** Every destination, name or address, leads to ip:port (fuzzed requests never leave loopback). */
export function redirectResolver(ip: string, port: number): Resolver {
  return {
    async resolve(): Promise<Target[]> {
      return [{ ip, family: isIP(ip) === 6 ? 6 : 4, port }];
    },
  };
}

// ---- SOCKS5 bytes ------------------------------------------------------------------------------

/** RFC 1929: 01 ULEN UNAME PLEN PASSWD */
export function userPassBytes(user: string, pass: string): Buffer {
  const u = Buffer.from(user);
  const p = Buffer.from(pass);
  return Buffer.concat([Buffer.from([0x01, u.length]), u, Buffer.from([p.length]), p]);
}

/** CONNECT to an IPv4 address */
export function connectV4(ip: string, port: number): Buffer {
  const b = Buffer.from([0x05, 0x01, 0x00, 0x01, ...ip.split('.').map(Number), 0, 0]);
  b.writeUInt16BE(port, 8);
  return b;
}

/** CONNECT to an IPv6 address given as 16 bytes */
export function connectV6(bytes: readonly number[], port: number): Buffer {
  const b = Buffer.from([0x05, 0x01, 0x00, 0x04, ...bytes, 0, 0]);
  b.writeUInt16BE(port, 20);
  return b;
}

/** CONNECT to a name */
export function connectName(name: string, port: number): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x03, n.length]), n, Buffer.alloc(2)]);
  b.writeUInt16BE(port, b.length - 2);
  return b;
}

export async function connectTo(port: number, host = '127.0.0.1', localAddress?: string): Promise<Socket> {
  const s = connect({ port, host, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) });
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

/**
 * Resolves when the peer ended or reset the connection (or it closed), with how long that took
 * from `since`; rejects after `timeoutMs`.
 */
export function closedAfter(s: Socket, since: number, timeoutMs = 10_000): Promise<number> {
  if (s.destroyed || s.readableEnded) return Promise.resolve(Date.now() - since);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs} ms`)), timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolve(Date.now() - since);
    };
    s.resume(); // read (and discard) what comes, so 'end' can be seen
    s.once('end', done);
    s.once('error', done);
    s.once('close', done);
  });
}

/**
 * Everything the peer sends until it ends or resets the connection (or `timeoutMs`: then
 * `timedOut`). `how` says which: 'end' (FIN), 'reset' (an error such as ECONNRESET), 'close'.
 */
export function drain(
  s: Socket,
  timeoutMs = 5000,
): Promise<{ bytes: Buffer; timedOut: boolean; how: 'end' | 'reset' | 'close' | 'timeout' }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (how: 'end' | 'reset' | 'close' | 'timeout') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ bytes: Buffer.concat(chunks), timedOut: how === 'timeout', how });
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => done('end'));
    s.once('error', () => done('reset'));
    s.once('close', () => done('close'));
    if (s.readableEnded) done('end');
    else if (s.destroyed) done('close');
  });
}

/** A full SOCKS5 login + CONNECT; returns the socket and the bytes of each step's answer. */
export async function socksLogin(
  proxyPort: number,
  user: string,
  pass: string,
  request: Buffer,
): Promise<{ socket: Socket; method: Buffer; status: Buffer; reply: Buffer }> {
  const socket = await connectTo(proxyPort);
  socket.write(Buffer.from([0x05, 0x01, 0x02]));
  const method = await readN(socket, 2);
  socket.write(userPassBytes(user, pass));
  const status = await readN(socket, 2);
  if (status[1] !== 0x00) return { socket, method, status, reply: Buffer.alloc(0) };
  socket.write(request);
  const reply = await readN(socket, 10);
  return { socket, method, status, reply };
}

// ---- HTTP bytes ----------------------------------------------------------------------------------

/** Send raw bytes, read until the proxy closes (or the deadline); the response text. */
export async function rawHttp(port: number, text: string | Buffer, timeoutMs = 5000): Promise<{ text: string; timedOut: boolean }> {
  const s = await connectTo(port);
  const d = drain(s, timeoutMs);
  s.write(text);
  const r = await d;
  s.destroy();
  return { text: r.bytes.toString('latin1'), timedOut: r.timedOut };
}

export function statusOf(text: string): number | undefined {
  const m = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
  return m ? Number(m[1]) : undefined;
}

// ---- a peer namespace -------------------------------------------------------------------------------

let peerSeq = 0;

/**
 * A network namespace joined to the current one by a veth pair: here `hfv<pid><n>` with
 * 10.77.<n>.1/24, there `eth0` with 10.77.<n>.2/24. Only inside the loopback-only test namespace
 * (the caller checks sandboxSkip()): nothing is added to the machine's own namespace. Deleted
 * by t.after, also on failure.
 */
export class PeerNs {
  readonly name: string;
  readonly hostSide: string;
  readonly localIp: string;
  readonly peerIp: string;
  private readonly children = new Set<Child>();

  private constructor(n: number) {
    this.name = `hf${process.pid}p${n}`;
    this.hostSide = `hfv${process.pid % 100000}${n}`;
    this.localIp = `10.77.${n}.1`;
    this.peerIp = `10.77.${n}.2`;
  }

  static async create(t: TestContext): Promise<PeerNs> {
    if (process.env.HOLDFAST_SANDBOX !== '1') throw new Error('PeerNs only inside the test namespace');
    const p = new PeerNs(++peerSeq % 200);
    t.after(() => p.destroy());
    await run('ip', ['netns', 'add', p.name]);
    await run('ip', ['-batch', '-'], {
      input: [
        `link add ${p.hostSide} type veth peer name eth0 netns ${p.name}`,
        `addr add ${p.localIp}/24 dev ${p.hostSide}`,
        `link set ${p.hostSide} up`,
      ].join('\n') + '\n',
    });
    await run('ip', ['-n', p.name, '-batch', '-'], {
      input: ['link set lo up', `addr add ${p.peerIp}/24 dev eth0`, 'link set eth0 up'].join('\n') + '\n',
    });
    // the veth carrier comes up asynchronously: wait for LOWER_UP on both ends (kernel state: poll)
    const deadline = Date.now() + 5000;
    for (;;) {
      const here = await run('ip', ['-o', 'link', 'show', 'dev', p.hostSide], { allowFail: true });
      const there = await run('ip', ['-n', p.name, '-o', 'link', 'show', 'dev', 'eth0'], { allowFail: true });
      if (here.stdout.includes('LOWER_UP') && there.stdout.includes('LOWER_UP')) break;
      if (Date.now() > deadline) throw new Error(`veth to ${p.name} has no carrier: ${here.stdout}${there.stdout}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return p;
  }

  /** Run a command inside the peer namespace (bounded). */
  exec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** A long-lived process inside the peer namespace; killed on destroy. */
  spawn(argv: readonly string[]): Child {
    const c = new Child(['ip', 'netns', 'exec', this.name, ...argv]);
    this.children.add(c);
    return c;
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.children].map((c) => c.kill(1000)));
    await run('ip', ['link', 'del', this.hostSide], { allowFail: true });
    await run('ip', ['netns', 'del', this.name], { allowFail: true });
  }
}
