// The HTTP proxy inbound: the server and its dispatch. CONNECT tunnels (http-connect.ts),
// absolute-form forwarding of plain HTTP (http-forward.ts), and requests addressed to holdfast
// itself (/status and friends, http-local.ts); the texts and header helpers are in http-text.ts.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { InboundContext } from './context.js';
import { parseConnectHead } from './connect-head.js';
import { handleConnect } from './http-connect.js';
import { createHttpForwarder } from './http-forward.js';
import { serveLocal, type LocalHandler } from './http-local.js';
import { authorized, clientErrorText, countHost, hostOf, sendError } from './http-text.js';
import { guarded } from './validate.js';

export type { LocalHandler } from './http-local.js';
export { forwardableHeaders, parseAuthority } from './http-text.js';

export interface HttpInboundOptions {
  readonly maxHeaderBytes: number;
  /** requests addressed to holdfast itself, by path */
  readonly local: ReadonlyMap<string, LocalHandler>;
  /** true if host:port is one of holdfast's own listeners (a loop) */
  readonly isSelf: (host: string, port: number) => boolean;
}

export interface HttpInbound {
  readonly server: Server;
  /**
   * Hand over a client connection (its first bytes unshifted back). `onHead` is called when the
   * first request head has been read (the listener's handshake deadline stops there).
   */
  handle(socket: Socket, onHead?: () => void): void;
  /**
   * A connection whose first chunk may be a whole CONNECT head (parseConnectHead): if it is, the
   * tunnel is opened here, `onHead` is called, and the answer is true. Else false, and nothing
   * was read or changed: hand the chunk back (unshift) and the socket to `handle`.
   */
  connectFrom(socket: Socket, chunk: Buffer, onHead: () => void): boolean;
  /** New limits (a reload) for connections from now on. */
  configure(opts: { maxHeaderBytes: number; handshakeTimeoutMs: number }): void;
  close(): Promise<void>;
}

export function createHttpInbound(ctx: InboundContext, o: HttpInboundOptions): HttpInbound {
  const forwarder = createHttpForwarder(ctx);

  /** per connection: what to call once its first request head has been read */
  const headWaiters = new WeakMap<Socket, () => void>();
  const headRead = (socket: Socket) => {
    const fn = headWaiters.get(socket);
    if (fn) {
      headWaiters.delete(socket);
      fn();
    }
  };

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    guarded(ctx.log, 'http request', () => res.destroy(), () => request(req, res));
  }

  function request(req: IncomingMessage, res: ServerResponse): void {
    headRead(req.socket);
    // RFC 9112 3.2: more than one Host is a 400
    if (countHost(req.rawHeaders) > 1) {
      ctx.counters.badHandshakes++;
      return sendError(res, 400, 'holdfast: more than one Host header\n');
    }
    const raw = req.url ?? '/';
    if (raw.startsWith('/')) return local(req, res, raw);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return sendError(res, 400, 'holdfast: the request target is not a valid URL\n');
    }
    if (url.protocol !== 'http:') {
      return sendError(res, 400, `holdfast: only http:// can be forwarded; use CONNECT for ${url.protocol}//\n`);
    }
    // an explicit port 0 is no destination (Number('0') || 80 would have dialled 80)
    if (url.port === '0') {
      ctx.counters.badHandshakes++;
      return sendError(res, 400, 'holdfast: port 0 is not a destination\n');
    }
    const port = Number(url.port) || 80;
    if (o.isSelf(hostOf(url.hostname), port)) return local(req, res, url.pathname + url.search);
    if (!authorized(ctx, req)) {
      res.writeHead(407, {
        'proxy-authenticate': 'Basic realm="holdfast", charset="UTF-8"',
        'content-type': 'text/plain; charset=utf-8',
      });
      res.end('holdfast: proxy authentication needed\n');
      return;
    }
    forwarder.forward(req, res, url).catch((err) => {
      ctx.log.error({ err }, 'http forward failed unexpectedly');
      res.destroy();
    });
  }

  const local = (req: IncomingMessage, res: ServerResponse, pathAndQuery: string) => serveLocal(ctx, o, req, res, pathAndQuery);

  function onConnect(req: IncomingMessage, socket: Socket, head: Buffer): void {
    guarded(ctx.log, 'http connect', () => socket.destroy(), () => {
      headRead(socket);
      handleConnect(ctx, o, req.url ?? '', req.headers['proxy-authorization'], socket, head);
    });
  }

  const server = createServer(
    {
      maxHeaderSize: o.maxHeaderBytes,
      requestTimeout: 0, // long uploads through the proxy are fine
      headersTimeout: ctx.handshakeTimeoutMs,
      keepAliveTimeout: 5000,
      connectionsCheckingInterval: 1000,
    },
    onRequest,
  );
  // The head size limit: Node keeps the constructor's option here and reads it for each new
  // connection's parser; parseConnectHead reads the same field, and a reload sets it.
  const limits = server as Server & { maxHeaderSize: number };
  server.on('connect', onConnect);
  // What Node does by default (the same answers), plus counters for /status and metrics.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const code = err.code ?? '';
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT') ctx.counters.handshakeTimeouts++;
    else if (code === 'HPE_HEADER_OVERFLOW') ctx.counters.headersTooLarge++;
    else if (code.startsWith('HPE_')) ctx.counters.badHandshakes++;
    if (socket.writable && socket.bytesWritten === 0) {
      const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      socket.write(`HTTP/1.1 ${status} ${clientErrorText[status]}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    }
    socket.destroy(err);
  });
  // This server never listens itself (the shared listener hands it connections), so start its
  // connection tracking by hand: that is what enforces headersTimeout (slowloris).
  server.emit('listening');

  return {
    server,
    handle(socket, onHead) {
      if (onHead) headWaiters.set(socket, onHead);
      server.emit('connection', socket);
    },
    connectFrom(socket, chunk, onHead) {
      const h = parseConnectHead(chunk, limits.maxHeaderSize);
      if (!h) return false;
      onHead();
      handleConnect(ctx, o, h.target, h.proxyAuthorization, socket, chunk.subarray(h.length));
      return true;
    },
    configure(opts) {
      limits.maxHeaderSize = opts.maxHeaderBytes;
      server.headersTimeout = opts.handshakeTimeoutMs;
    },
    async close() {
      server.closeAllConnections();
      await forwarder.close();
    },
  };
}
