// A paced HTTP server for the netns lab, and the deterministic byte stream it serves.
//
// Run as a script inside the server namespace:
//   node dist/test/helpers/paced-server.js --port 8080
// It listens on [::]:port (dual stack) and prints one JSON line per event on stdout:
//   {"event":"listening","port":8080}
//   {"event":"request", id, tag, path, peer, peerPort, local, startedAt}
//   {"event":"end", ...the request record, bytesSent, done, aborted, endedAt}
// Endpoints:
//   GET /download?bytes=N&rate=BYTES_PER_SEC&seed=S&tag=T  N deterministic bytes, paced at rate
//     &ranges=1   with Accept-Ranges: bytes and a strong ETag; a `Range: bytes=A-` or `bytes=A-B`
//                 request gets a 206 of those bytes (paced too) unless its If-Range differs
//     &changes=1  (with ranges=1) the file changes before any Range request: that request sees
//                 version 2 (other bytes: seed + 1000, another ETag), so its If-Range no longer
//                 matches and it gets a 200 of version 2
//   GET /whoami                                           {"peer","peerPort","local"}
//   GET /seen                                             every request record so far (JSON list)
// `peer` is the address the server saw (IPv4-mapped prefix stripped): behind the lab's NAT
// routers it tells which network the flow came through.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import type { Child } from './proc.js';

export const CHUNK = 64 * 1024;

const baseCache = new Map<number, Buffer>();

function baseBlock(seed: number): Buffer {
  let b = baseCache.get(seed);
  if (b) return b;
  b = Buffer.allocUnsafe(CHUNK);
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < CHUNK; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  baseCache.set(seed, b);
  return b;
}

/** Chunk k (CHUNK bytes) of the stream for `seed`: a PRNG block stamped with seed and k, so reordering shows. */
export function chunkOf(seed: number, k: number): Buffer {
  const c = Buffer.from(baseBlock(seed));
  c.writeUInt32BE(seed >>> 0, 0);
  c.writeUInt32BE(k >>> 0, 4);
  return c;
}

/** The sha256 (hex) of the first `bytes` bytes of the stream for `seed`. */
export function expectedSha256(seed: number, bytes: number): string {
  const h = createHash('sha256');
  for (let k = 0, off = 0; off < bytes; k++, off += CHUNK) {
    const c = chunkOf(seed, k);
    h.update(bytes - off >= CHUNK ? c : c.subarray(0, bytes - off));
  }
  return h.digest('hex');
}

export interface RequestRecord {
  id: number;
  tag: string | null;
  path: string;
  peer: string;
  peerPort: number;
  local: string;
  startedAt: number;
  bytesSent: number;
  bytes: number | null;
  done: boolean;
  aborted: boolean;
  endedAt: number | null;
  /** the request's Range header, and the status answered (download only) */
  range?: string | null;
  status?: number;
}

export function normalizeIp(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

function serve(port: number): void {
  const records: RequestRecord[] = [];
  const sockets = new Set<Socket>();
  let nextId = 1;
  const emit = (event: string, data: object): void => {
    process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const sock = req.socket;
    const rec: RequestRecord = {
      id: nextId++,
      tag: url.searchParams.get('tag'),
      path: url.pathname + url.search,
      peer: normalizeIp(sock.remoteAddress),
      peerPort: sock.remotePort ?? 0,
      local: normalizeIp(sock.localAddress),
      startedAt: Date.now(),
      bytesSent: 0,
      bytes: null,
      done: false,
      aborted: false,
      endedAt: null,
      range: req.headers.range ?? null,
    };
    records.push(rec);
    emit('request', rec);
    const finish = (): void => {
      if (rec.endedAt !== null) return;
      rec.endedAt = Date.now();
      emit('end', rec);
    };
    res.on('finish', () => {
      rec.done = true;
      finish();
    });
    res.on('close', () => {
      if (!rec.done) rec.aborted = true;
      finish();
    });

    if (url.pathname === '/whoami') {
      const body = JSON.stringify({ peer: rec.peer, peerPort: rec.peerPort, local: rec.local });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (url.pathname === '/seen') {
      const body = JSON.stringify(records);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (url.pathname !== '/download') {
      res.writeHead(404).end();
      return;
    }
    const bytes = Number(url.searchParams.get('bytes') ?? 1024 * 1024);
    const rate = Number(url.searchParams.get('rate') ?? 1024 * 1024);
    const seed = Number(url.searchParams.get('seed') ?? 1);
    if (!Number.isSafeInteger(bytes) || bytes < 0 || !(rate > 0) || !Number.isInteger(seed)) {
      res.writeHead(400).end();
      return;
    }
    const ranges = url.searchParams.get('ranges') === '1';
    const rangeHeader = req.headers.range ?? null;
    // version 2 of a `changes` file: what any Range request sees
    const changed = ranges && url.searchParams.get('changes') === '1' && rangeHeader !== null;
    const seedNow = changed ? seed + 1000 : seed;
    const etag = `"s${seedNow}-b${bytes}"`;
    let first = 0;
    let last = bytes - 1;
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'x-peer': rec.peer };
    if (ranges) Object.assign(headers, { 'accept-ranges': 'bytes', etag });
    const m = ranges ? /^bytes=(\d+)-(\d*)$/.exec(rangeHeader ?? '') : null;
    const ifRange = req.headers['if-range'];
    if (m && (ifRange === undefined || ifRange === etag) && Number(m[1]) < bytes) {
      first = Number(m[1]);
      last = m[2] ? Math.min(Number(m[2]), bytes - 1) : bytes - 1;
      headers['content-range'] = `bytes ${first}-${last}/${bytes}`;
      rec.status = 206;
    } else rec.status = 200;
    rec.bytes = last - first + 1;
    res.writeHead(rec.status, { ...headers, 'content-length': last - first + 1 });
    const start = performance.now();
    let k = -1;
    let chunk: Buffer = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    res.on('close', () => clearTimeout(timer));
    const pump = (): void => {
      timer = undefined;
      if (res.destroyed) return;
      const length = last - first + 1;
      const allowed = Math.min(length, Math.floor((rate * (performance.now() - start)) / 1000));
      while (rec.bytesSent < allowed) {
        const pos = first + rec.bytesSent;
        const ck = Math.floor(pos / CHUNK);
        if (ck !== k) {
          k = ck;
          chunk = chunkOf(seedNow, k);
        }
        const from = pos - k * CHUNK;
        const to = Math.min(CHUNK, first + allowed - k * CHUNK);
        rec.bytesSent += to - from;
        if (!res.write(chunk.subarray(from, to))) {
          if (rec.bytesSent >= length) break;
          res.once('drain', pump);
          return;
        }
      }
      if (rec.bytesSent >= length) {
        res.end();
        return;
      }
      timer = setTimeout(pump, 20);
    };
    pump();
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const stop = (): void => {
    server.close();
    for (const s of sockets) s.destroy();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  server.listen({ port, host: '::', ipv6Only: false }, () => emit('listening', { port }));
}

// ---- test-side handle -------------------------------------------------------------------------

export interface PacedServerEvent extends RequestRecord {
  event: 'request' | 'end';
}

/** A paced server started in a lab namespace (see Lab.spawn). */
export class PacedServer {
  constructor(
    readonly child: Child,
    readonly port: number,
  ) {}

  /** Wait until it prints that it listens. */
  async ready(timeoutMs = 5000): Promise<this> {
    await this.child.waitForLine((l) => l.includes('"event":"listening"'), timeoutMs, 'the paced server to listen');
    return this;
  }

  /** Wait for the request (event 'request') or its end (event 'end') with this tag. */
  async waitFor(tag: string, event: 'request' | 'end', timeoutMs: number): Promise<PacedServerEvent> {
    const line = await this.child.waitForLine(
      (l) => {
        try {
          const e = JSON.parse(l) as PacedServerEvent;
          return e.event === event && e.tag === tag;
        } catch {
          return false;
        }
      },
      timeoutMs,
      `the server's '${event}' for ${tag}`,
    );
    return JSON.parse(line) as PacedServerEvent;
  }

  /** The latest record for a tag, as printed so far. */
  record(tag: string): PacedServerEvent | undefined {
    return this.child
      .jsonLines<PacedServerEvent>()
      .filter((e) => e.tag === tag)
      .at(-1);
  }
}

export function pacedServerScript(): string {
  return new URL(import.meta.url).pathname;
}

/** `/download` path for a tagged, paced, deterministic download. */
export function downloadPath(o: { bytes: number; rate: number; seed: number; tag: string; ranges?: boolean; changes?: boolean }): string {
  const extra = (o.ranges ? '&ranges=1' : '') + (o.changes ? '&changes=1' : '');
  return `/download?bytes=${o.bytes}&rate=${o.rate}&seed=${o.seed}&tag=${encodeURIComponent(o.tag)}${extra}`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--port');
  serve(i > 0 ? Number(process.argv[i + 1]) : 8080);
}
