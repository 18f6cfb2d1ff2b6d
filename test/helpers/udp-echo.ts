// UDP helpers for tests: an in-process echo server and inbox (loopback), and, run as a script, a
// UDP echo server for the netns lab's server namespace and a SOCKS5 UDP echo client for its host
// namespace (the test process lives in neither, so both are child processes there).
//
//   node dist/test/helpers/udp-echo.js server --port 7007 --addresses 10.200.0.1,fd20::1
//     listens on port at each address, echoes every datagram from the address it came to, prints
//     one JSON line each: {"event":"datagram","peer","peerPort","local","bytes","tag","seq"}
//   node dist/test/helpers/udp-echo.js client --proxy 127.0.0.1:1080 --dest 10.200.0.1:7007
//       --count 100 --interval 100 --tag X [--linger 0]
//     one SOCKS5 UDP association (the `socks` package), `count` datagrams `interval` ms apart,
//     prints {"event":"associated","relay"}, one {"event":"echo","seq","rttMs","from"} per echo,
//     then {"event":"done","sent","received","missing","rttMs":{min,median,max}} once every echo
//     is in or 3 s after the last send; keeps the association `linger` ms more, then exits.
//     With --direct: no proxy, the same exchange from an unbound socket (the control case).
import { createSocket, type RemoteInfo, type Socket as UdpSocket, type SocketType } from 'node:dgram';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { pathToFileURL } from 'node:url';
import { SocksClient } from 'socks';
import { encodeUdpHeader, parseUdpHeader, type SocksAddress } from '../../src/inbound/socks5.js';

export interface Datagram {
  readonly msg: Buffer;
  readonly rinfo: RemoteInfo;
}

/** Received datagrams, in order; next() waits for one (bounded). */
export class Inbox {
  readonly #queue: Datagram[] = [];
  #waiter: ((d: Datagram) => void) | undefined;
  readonly all: Datagram[] = [];

  constructor(readonly socket: UdpSocket) {
    socket.on('message', (msg, rinfo) => {
      const d = { msg, rinfo };
      this.all.push(d);
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = undefined;
        w(d);
      } else this.#queue.push(d);
    });
  }

  get pending(): number {
    return this.#queue.length;
  }

  next(timeoutMs = 5000): Promise<Datagram> {
    const d = this.#queue.shift();
    if (d) return Promise.resolve(d);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new Error(`no datagram within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = (x) => {
        clearTimeout(timer);
        resolve(x);
      };
    });
  }
}

/** A UDP socket bound on loopback, closed by t.after, with an inbox. */
export async function udpSocket(t: TestContext, host = '127.0.0.1', port = 0): Promise<{ socket: UdpSocket; inbox: Inbox; port: number }> {
  const type: SocketType = host.includes(':') ? 'udp6' : 'udp4';
  const socket = createSocket({ type });
  t.after(() => {
    try {
      socket.close();
    } catch {
      /* closed */
    }
  });
  const inbox = new Inbox(socket);
  socket.bind(port, host);
  await once(socket, 'listening');
  return { socket, inbox, port: socket.address().port };
}

export interface UdpEcho {
  readonly port: number;
  /** every datagram received: payload text and the peer it came from */
  readonly seen: { text: string; peer: string; peerPort: number; bytes: number }[];
}

/**
 * A UDP echo server on `host` (closed by t.after). `reply` may replace the answer (null: no
 * answer). `port` 0: any.
 */
export async function udpEcho(
  t: TestContext,
  host = '127.0.0.1',
  port = 0,
  reply?: (msg: Buffer) => Buffer | null,
): Promise<UdpEcho> {
  const { socket, port: bound } = await udpSocket(t, host, port);
  const seen: UdpEcho['seen'] = [];
  socket.on('message', (msg, rinfo) => {
    seen.push({ text: msg.subarray(0, 200).toString('utf8'), peer: rinfo.address, peerPort: rinfo.port, bytes: msg.length });
    const out = reply ? reply(msg) : msg;
    if (out) socket.send(out, rinfo.port, rinfo.address);
  });
  return { port: bound, seen };
}

/** Echo servers on 127.0.0.1 and ::1 on the same port (for a destination named "localhost"). */
export async function udpEchoBoth(t: TestContext): Promise<{ port: number; v4: UdpEcho; v6: UdpEcho }> {
  for (let i = 0; i < 20; i++) {
    const v4 = await udpEcho(t, '127.0.0.1');
    try {
      const v6 = await udpEcho(t, '::1', v4.port);
      return { port: v4.port, v4, v6 };
    } catch {
      /* the port is taken on ::1: try another */
    }
  }
  throw new Error('no port free on both 127.0.0.1 and ::1 in 20 tries');
}

/** A SOCKS5 UDP datagram: header for (host, port) then payload. */
export function frame(host: string, port: number, payload: Buffer | string, frag = 0): Buffer {
  const address: SocksAddress = host.includes(':')
    ? { kind: 'ipv6', ip: host }
    : /^\d+\.\d+\.\d+\.\d+$/.test(host)
      ? { kind: 'ipv4', ip: host }
      : { kind: 'domain', name: host };
  return Buffer.concat([encodeUdpHeader(address, port, frag), Buffer.from(payload)]);
}

/** Parse a datagram from the relay: the source it names, and the payload. */
export function unframe(msg: Buffer): { host: string; port: number; payload: Buffer } {
  const h = parseUdpHeader(msg);
  if (!h.ok) throw new Error(`not a SOCKS5 UDP datagram: ${msg.subarray(0, 32).toString('hex')}`);
  const a = h.value.address;
  return { host: a.kind === 'domain' ? a.name : a.ip, port: h.value.port, payload: msg.subarray(h.used) };
}

/**
 * UDP ASSOCIATE with the `socks` client (its createConnection takes CONNECT only): resolves with
 * the control connection and the relay address of the reply.
 */
export function socksAssociate(
  proxy: { host: string; port: number },
  destination = { host: proxy.host.includes(':') ? '::' : '0.0.0.0', port: 0 },
  timeoutMs = 5000,
): Promise<{ socket: Socket; relay: { host: string; port: number } }> {
  const client = new SocksClient({ proxy: { ...proxy, type: 5 }, command: 'associate', destination, timeout: timeoutMs });
  return new Promise((resolve, reject) => {
    client.once('established', (raw: unknown) => {
      const info = raw as { socket: Socket; remoteHost?: { host: string; port: number } };
      if (!info.remoteHost) {
        info.socket.destroy();
        reject(new Error('the proxy named no relay'));
        return;
      }
      resolve({ socket: info.socket, relay: info.remoteHost });
    });
    client.once('error', reject);
    client.connect();
  });
}

// ---- script mode (netns lab) ------------------------------------------------------------------

function arg(argv: string[], name: string, dflt?: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1];
  if (dflt !== undefined) return dflt;
  throw new Error(`--${name} is required`);
}

function hostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  if (!m) throw new Error(`expected HOST:PORT, got ${s}`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

function emit(event: string, data: object): void {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

/**
 * One socket per address (a wildcard-bound UDP socket would answer from whatever source the
 * route picks, which the routers' NAT would not match to the request), echoing every datagram.
 */
function serve(port: number, addresses: string[]): void {
  let listening = 0;
  for (const address of addresses) {
    const s = createSocket({ type: address.includes(':') ? 'udp6' : 'udp4' });
    s.on('message', (msg, rinfo) => {
      let tag: unknown = null;
      let seq: unknown = null;
      try {
        const o = JSON.parse(msg.toString('utf8')) as { tag?: unknown; seq?: unknown };
        tag = o.tag ?? null;
        seq = o.seq ?? null;
      } catch {
        /* not ours: echoed anyway */
      }
      emit('datagram', { peer: rinfo.address, peerPort: rinfo.port, local: address, bytes: msg.length, tag, seq });
      s.send(msg, rinfo.port, rinfo.address);
    });
    s.bind(port, address, () => {
      if (++listening === addresses.length) emit('listening', { port, addresses });
    });
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

async function client(argv: string[]): Promise<void> {
  const proxy = hostPort(arg(argv, 'proxy'));
  const dest = hostPort(arg(argv, 'dest'));
  const count = Number(arg(argv, 'count', '100'));
  const interval = Number(arg(argv, 'interval', '100'));
  const tag = arg(argv, 'tag', 'udp');
  const linger = Number(arg(argv, 'linger', '0'));
  // --direct: no proxy at all, an unbound socket sending to dest (the control case)
  const direct = argv.includes('--direct');
  let control: Socket | undefined;
  let relay = { host: '', port: 0 };
  if (!direct) {
    const a = await socksAssociate(proxy);
    control = a.socket;
    relay = a.relay;
    control.on('error', () => {});
  }
  const sock = createSocket({ type: (direct ? dest.host : relay.host).includes(':') ? 'udp6' : 'udp4' });
  sock.bind(0, direct ? undefined : proxy.host);
  await once(sock, 'listening');
  emit('associated', { relay: direct ? null : `${relay.host}:${relay.port}`, local: sock.address().port });
  const sentAt = new Map<number, number>();
  const rtts = new Map<number, number>();
  let allIn: (() => void) | undefined;
  sock.on('message', (msg, rinfo) => {
    const u = direct ? { host: rinfo.address, port: rinfo.port, payload: msg } : unframe(msg);
    let seq = -1;
    try {
      seq = (JSON.parse(u.payload.toString('utf8')) as { seq: number }).seq;
    } catch {
      return;
    }
    const t0 = sentAt.get(seq);
    if (t0 === undefined || rtts.has(seq)) return;
    const rtt = Date.now() - t0;
    rtts.set(seq, rtt);
    emit('echo', { seq, rttMs: rtt, from: `${u.host}:${u.port}`, at: Date.now() });
    if (rtts.size === count) allIn?.();
  });
  for (let seq = 0; seq < count; seq++) {
    sentAt.set(seq, Date.now());
    const payload = JSON.stringify({ tag, seq, t: Date.now() });
    if (direct) sock.send(payload, dest.port, dest.host);
    else sock.send(frame(dest.host, dest.port, payload), relay.port, relay.host);
    if (seq < count - 1) await new Promise((r) => setTimeout(r, interval));
  }
  if (rtts.size < count) {
    await new Promise<void>((r) => {
      allIn = r;
      setTimeout(r, 3000);
    });
  }
  const sorted = [...rtts.values()].sort((a, b) => a - b);
  const missing: number[] = [];
  for (let seq = 0; seq < count; seq++) if (!rtts.has(seq)) missing.push(seq);
  emit('done', {
    sent: count,
    received: rtts.size,
    missing,
    rttMs: sorted.length ? { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] } : null,
  });
  if (linger > 0) await new Promise((r) => setTimeout(r, linger));
  sock.close();
  control?.end();
  control?.destroySoon();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'server') serve(Number(arg(rest, 'port', '7007')), arg(rest, 'addresses').split(','));
  else if (mode === 'client')
    client(rest).then(
      () => process.exit(0),
      (err: unknown) => {
        emit('error', { message: String((err as Error)?.message ?? err) });
        process.exit(1);
      },
    );
  else {
    process.stderr.write('usage: udp-echo.js server --port P --addresses A,B | client --proxy H:P --dest H:P [--count N --interval MS --tag T --linger MS]\n');
    process.exit(2);
  }
}

/** The compiled path of this script, to run it with node in a lab namespace. */
export function udpEchoScript(): string {
  return new URL(import.meta.url).pathname;
}
