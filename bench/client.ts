// The bench's own client: raw sockets, the SOCKS5 and HTTP CONNECT handshakes written by hand
// (what curl does: greeting, wait for the method, request, wait for the reply), so the load
// generator costs the same for every proxy and nothing hides in a library.
import { connect, type Socket } from 'node:net';

/** How to reach the sink: directly, or through a proxy on 127.0.0.1:port. */
export type Via = { kind: 'direct' } | { kind: 'socks5'; port: number } | { kind: 'connect'; port: number };

export class TunnelError extends Error {
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const GREETING = Buffer.from([5, 1, 0]);

function socksRequest(ip: string, port: number): Buffer {
  const b = Buffer.alloc(10);
  b[0] = 5;
  b[1] = 1; // CONNECT
  b[3] = 1; // IPv4
  ip.split('.').forEach((o, i) => (b[4 + i] = Number(o)));
  b.writeUInt16BE(port, 8);
  return b;
}

/** Bytes a complete SOCKS5 reply occupies at the start of buf, or 0 if more are needed. */
function socksReplyLength(buf: Buffer): number {
  if (buf.length < 5) return 0;
  const n = buf[3] === 1 ? 10 : buf[3] === 4 ? 22 : buf[3] === 3 ? 7 + buf[4] : -1;
  if (n < 0) return -1;
  return buf.length >= n ? n : 0;
}

/**
 * Open a TCP connection to dst through `via`; resolves once the proxy reports success, with the
 * socket paused and any early bytes unshifted. Settles once; the timer dies with the attempt.
 */
export function openTunnel(via: Via, dstPort: number, timeoutMs = 10_000, dstIp = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const target = via.kind === 'direct' ? dstPort : via.port;
    const sock = connect({ host: '127.0.0.1', port: target, noDelay: true });
    let settled = false;
    const settle = (err?: TunnelError, rest?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('error', onError);
      sock.removeListener('close', onClose);
      if (err !== undefined) {
        sock.destroy();
        reject(err);
        return;
      }
      sock.pause();
      if (rest !== undefined && rest.length > 0) sock.unshift(rest);
      resolve(sock);
    };
    const timer = setTimeout(() => settle(new TunnelError(`no tunnel via ${via.kind} in ${timeoutMs} ms`, 'TIMEOUT')), timeoutMs);
    const onError = (e: NodeJS.ErrnoException): void =>
      settle(new TunnelError(`${via.kind} 127.0.0.1:${target}: ${e.code ?? e.message}`, e.code ?? 'ERR', { cause: e }));
    const onClose = (): void => settle(new TunnelError(`${via.kind}: proxy closed during handshake`, 'CLOSED'));
    let buf: Buffer = Buffer.alloc(0);
    let stage = 0;
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (via.kind === 'socks5') {
        if (stage === 0) {
          if (buf.length < 2) return;
          if (buf[0] !== 5 || buf[1] !== 0) return settle(new TunnelError(`socks5: method ${buf[1]}`, 'METHOD'));
          buf = buf.subarray(2);
          stage = 1;
          sock.write(socksRequest(dstIp, dstPort));
        }
        const n = socksReplyLength(buf);
        if (n === 0) return;
        if (n < 0 || buf[1] !== 0) return settle(new TunnelError(`socks5: reply ${buf[1]}`, `REPLY_${buf[1]}`));
        settle(undefined, buf.subarray(n));
      } else if (via.kind === 'connect') {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (buf.length > 16384) settle(new TunnelError('connect: response head too long', 'HEAD'));
          return;
        }
        const status = buf.toString('latin1', 9, 12);
        if (status !== '200') return settle(new TunnelError(`connect: ${buf.toString('latin1', 0, buf.indexOf('\r\n'))}`, `HTTP_${status}`));
        settle(undefined, buf.subarray(end + 4));
      }
    };
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.once('connect', () => {
      if (via.kind === 'direct') return settle();
      sock.on('data', onData);
      if (via.kind === 'socks5') sock.write(GREETING);
      else sock.write(`CONNECT ${dstIp}:${dstPort} HTTP/1.1\r\nHost: ${dstIp}:${dstPort}\r\n\r\n`);
    });
  });
}

/** Sink request header for mode 'R': read n, write n, end. */
export function reqRespHeader(n: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = 0x52;
  b.writeUInt32BE(n, 1);
  return b;
}

export const ECHO = Buffer.from('E');

/** Run fn on `concurrency` workers until it has been started `count` times; first error wins. */
export async function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/**
 * The one outcome of reading a flow on `sock`: the first call wins, clears the deadline and
 * closes the socket, then `done` hears it (an error, or undefined for success). The deadline
 * settles it with `timedOut()`'s error.
 */
export function settleOnce(
  sock: Socket,
  timeoutMs: number,
  timedOut: () => Error,
  done: (err: Error | undefined) => void,
): (err?: Error) => void {
  let settled = false;
  const settle = (err?: Error): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    sock.destroy();
    done(err);
  };
  const timer = setTimeout(() => settle(timedOut()), timeoutMs);
  return settle;
}

/**
 * One short flow (rate's, and bench/flows.ts's): the tunnel, `payload` (an `R` request and its
 * bytes) up, as many bytes back, the sink closes first; resolves when both sides have closed.
 */
export function shortFlow(via: Via, sinkPort: number, payload: Buffer, timeoutMs: number): Promise<void> {
  return openTunnel(via, sinkPort, timeoutMs).then(
    (sock) =>
      new Promise<void>((resolve, reject) => {
        let got = 0;
        const settle = settleOnce(sock, timeoutMs, () => new Error('flow timed out'), (err) => (err ? reject(err) : resolve()));
        sock.on('data', (d: Buffer) => (got += d.length));
        sock.on('end', () => {
          if (got !== payload.length - 5) return settle(new Error(`short echo: ${got}`));
          sock.end();
        });
        sock.on('error', (e) => settle(e));
        sock.on('close', () => settle(got === payload.length - 5 ? undefined : new Error(`closed after ${got} bytes`)));
        sock.resume();
        sock.write(payload);
      }),
  );
}

const FIRST_BYTE = Buffer.concat([reqRespHeader(1), Buffer.from('!')]);

/**
 * One new flow, timed from connect to the first byte back (µs): connect, handshake, one byte to
 * the sink's raw port, which answers one byte and closes first (mode 'R', so the TIME_WAITs stay
 * on its side). Resolves once the tunnel has closed, so flows timed one after another do not
 * overlap.
 */
export async function newFlowMicros(via: Via, sinkPort: number): Promise<number> {
  const t0 = performance.now();
  const sock = await openTunnel(via, sinkPort);
  let took = 0;
  try {
    sock.write(FIRST_BYTE);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer and close in 10 s')), 10_000);
      sock.once('data', () => (took = (performance.now() - t0) * 1000));
      sock.once('close', () => {
        clearTimeout(timer);
        if (took > 0) resolve();
        else reject(new Error('closed without an answer'));
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      sock.resume();
    });
  } finally {
    sock.destroy();
  }
  return took;
}
