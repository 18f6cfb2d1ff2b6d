// The far end of every scenario: a tight node:net server on loopback, run in its own process
// (`node dist/bench/sink.js` prints `{"raw":P1,"http":P2}` on stdout when ready).
//
// Raw TCP, first byte picks the mode:
//   'B' + u64 BE n   send n bytes, then end                  (bulk download)
//   'R' + u32 BE n   read n bytes, write n bytes, then end   (one short flow; the sink closes first)
//   'E'              echo everything; end when the client ends (latency)
//   'H'              echo, but end first on a chunk containing 'X' (idle tunnels)
//   'D'              discard everything; on end write the u64 BE count, then end (upload)
// HTTP/1.1 (origin-form or absolute-form target, keep-alive unless `Connection: close`):
//   GET /bytes?n=N   200 with N bytes of body
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

const CHUNK = 256 * 1024;
const BODY = Buffer.alloc(CHUNK, 'holdfast-bench-');

/** Write n bytes of BODY with backpressure, then call done. */
function sendBytes(sock: Socket, n: number, done: () => void): void {
  let left = n;
  const pump = (): void => {
    while (left > 0) {
      const len = Math.min(left, CHUNK);
      left -= len;
      if (!sock.write(len === CHUNK ? BODY : BODY.subarray(0, len))) {
        sock.once('drain', pump);
        return;
      }
    }
    done();
  };
  pump();
}

function onRaw(sock: Socket): void {
  sock.setNoDelay(true);
  sock.on('error', () => sock.destroy());
  let head: Buffer = Buffer.alloc(0);
  const onHead = (chunk: Buffer): void => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    const mode = head[0];
    if (mode === 0x45 /* E */) {
      sock.off('data', onHead);
      if (head.length > 1) sock.write(head.subarray(1));
      sock.on('data', (c: Buffer) => {
        if (!sock.write(c)) {
          sock.pause();
          sock.once('drain', () => sock.resume());
        }
      });
      sock.on('end', () => sock.end());
    } else if (mode === 0x48 /* H */) {
      // Hold: echo, and close first when a chunk contains 'X'. The sink, not the proxy, then
      // holds the TIME_WAIT, so no proxy's ephemeral ports (bound to 127.0.0.1) stay taken.
      sock.off('data', onHead);
      const onHold = (c: Buffer): void => {
        if (c.includes(0x58)) {
          sock.off('data', onHold);
          sock.on('data', () => undefined);
          sock.end();
        } else sock.write(c);
      };
      if (head.length > 1) onHold(head.subarray(1));
      sock.on('data', onHold);
      sock.on('end', () => sock.end());
    } else if (mode === 0x44 /* D */) {
      sock.off('data', onHead);
      let count = head.length - 1;
      sock.on('data', (c: Buffer) => {
        count += c.length;
      });
      sock.on('end', () => {
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(BigInt(count));
        sock.end(b);
      });
    } else if (mode === 0x42 /* B */) {
      if (head.length < 9) return;
      sock.off('data', onHead);
      const n = Number(head.readBigUInt64BE(1));
      sock.on('data', () => undefined); // ignore anything further, keep flowing
      sock.on('end', () => undefined);
      sendBytes(sock, n, () => sock.end());
    } else if (mode === 0x52 /* R */) {
      if (head.length < 5) return;
      sock.off('data', onHead);
      const n = head.readUInt32BE(1);
      let got = head.length - 5;
      const finish = (): void => {
        sock.removeAllListeners('data');
        sock.on('data', () => undefined);
        sendBytes(sock, n, () => sock.end());
      };
      if (got >= n) finish();
      else
        sock.on('data', (c: Buffer) => {
          got += c.length;
          if (got >= n) finish();
        });
      sock.on('end', () => undefined);
    } else {
      sock.destroy();
    }
  };
  sock.on('data', onHead);
  sock.once('end', () => {
    if (head.length === 0) sock.end(); // the client left before choosing a mode
  });
}

const HEAD_MAX = 16 * 1024;

function onHttp(sock: Socket): void {
  sock.setNoDelay(true);
  sock.on('error', () => sock.destroy());
  let buf = '';
  let busy = false;
  let peerEnded = false;
  sock.on('end', () => {
    peerEnded = true;
    if (!busy) sock.end();
  });
  const next = (): void => {
    if (busy) return;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buf.length > HEAD_MAX) sock.destroy();
      return;
    }
    const head = buf.slice(0, end);
    buf = buf.slice(end + 4);
    const lines = head.split('\r\n');
    const [method, target, version] = lines[0].split(' ');
    const close =
      version !== 'HTTP/1.1' || lines.some((l) => /^connection:\s*close/i.test(l)) || lines.some((l) => /^content-length:\s*[1-9]/i.test(l));
    let url: URL;
    try {
      url = new URL(target, 'http://sink.invalid');
    } catch {
      sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const n = Number(url.searchParams.get('n'));
    if (method !== 'GET' || url.pathname !== '/bytes' || !Number.isSafeInteger(n) || n < 0) {
      sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    busy = true;
    sock.write(
      `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${n}\r\n` +
        `Connection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`,
    );
    sendBytes(sock, n, () => {
      busy = false;
      if (close || peerEnded) sock.end();
      else next();
    });
  };
  sock.setEncoding('latin1');
  sock.on('data', (c: string) => {
    buf += c;
    next();
  });
}

export interface Sink {
  raw: number;
  http: number;
  close(): Promise<void>;
}

/** Start both servers in this process; they destroy their tracked sockets on close. */
export async function startSink(host = '127.0.0.1'): Promise<Sink> {
  const sockets = new Set<Socket>();
  const track = (h: (s: Socket) => void) => (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    h(s);
  };
  const listen = (srv: Server): Promise<number> =>
    new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port: 0, backlog: 4096 }, () => resolve((srv.address() as AddressInfo).port));
    });
  const raw = createServer({ allowHalfOpen: true }, track(onRaw));
  const http = createServer({ allowHalfOpen: true }, track(onHttp));
  const [rawPort, httpPort] = await Promise.all([listen(raw), listen(http)]);
  return {
    raw: rawPort,
    http: httpPort,
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise((r) => raw.close(r)), new Promise((r) => http.close(r))]);
    },
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sink = await startSink();
  process.stdout.write(`${JSON.stringify({ raw: sink.raw, http: sink.http })}\n`);
  const stop = (): void => {
    setTimeout(() => process.exit(0), 500).unref();
    void sink.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Stop with the bench even if it is SIGKILLed: stdin is not ours, so watch the parent.
  const parent = process.ppid;
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      process.exit(0);
    }
  }, 1000).unref();
}
