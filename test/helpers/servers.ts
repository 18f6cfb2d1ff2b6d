// Loopback servers for tests: every one tracks its sockets and destroys them on close.
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

export interface Running<S> {
  readonly server: S;
  readonly port: number;
  close(): Promise<void>;
}

function track(server: Server | import('node:http').Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return sockets;
}

async function start<S extends Server | import('node:http').Server>(
  t: TestContext,
  server: S,
  host: string,
): Promise<Running<S>> {
  const sockets = track(server);
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  t.after(close);
  return { server, port: (server.address() as AddressInfo).port, close };
}

/** TCP echo; with allowHalfOpen it echoes until the client ends, then ends too. */
export function echoServer(t: TestContext, host = '127.0.0.1'): Promise<Running<Server>> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  return start(t, server, host);
}

/** A server whose handler gets each socket (for half-close and peer tests). */
export function tcpServer(t: TestContext, onSocket: (s: Socket) => void, host = '127.0.0.1'): Promise<Running<Server>> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    onSocket(s);
  });
  return start(t, server, host);
}

/** HTTP server with a handler; records each request's method, url, headers, body size, peer. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  bodyBytes: number;
  peer: string;
}

export async function httpServer(
  t: TestContext,
  handler?: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void,
  host = '127.0.0.1',
): Promise<Running<import('node:http').Server> & { seen: SeenRequest[] }> {
  const seen: SeenRequest[] = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bodyBytes: body.length,
        peer: req.socket.remoteAddress ?? '',
      });
      if (handler) handler(req, res, body);
      else {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(seen[seen.length - 1]));
      }
    });
  });
  const r = await start(t, server, host);
  return { ...r, seen };
}

/** A port where nothing listens (bound then closed). */
export async function closedPort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
