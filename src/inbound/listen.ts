// Listeners. One port serves SOCKS5 and HTTP: the first byte tells (0x05 is SOCKS5), and the
// chunk is handed on unread for HTTP.
import { createServer, type Server, type Socket } from 'node:net';
import type { ListenAddress } from '../config.js';
import { formatHostPort } from '../config.js';
import { peerOf, type InboundContext } from './context.js';
import type { HttpInbound } from './http.js';
import { handleSocks5 } from './socks5-session.js';

export interface Listener {
  readonly address: ListenAddress;
  readonly server: Server;
  /** the actual bound address (port resolved if 0) */
  bound(): ListenAddress;
  close(): Promise<void>;
}

/** A client reset is an expected end ('close' follows). Module-level: a per-connection closure
 * would keep this function's whole context alive for the life of the tunnel. */
export function ignoreError(): void {}

/** Where a connection still in its handshake keeps its state (read by the listeners below). */
const kSniff = Symbol('holdfast.sniff');

/**
 * A connection from accept until its handshake is done: one object, with listeners and a timer
 * callback shared by every connection (a per-connection closure each would be six more objects).
 */
class Sniffing {
  protocol: 'none' | 'socks5' | 'http' = 'none';
  readonly timer: NodeJS.Timeout;
  /** handed to the protocol: the handshake is over (the deadline stops; 'close' also calls it) */
  readonly done: () => void;

  constructor(
    readonly socket: Socket,
    readonly ctx: InboundContext,
    readonly http: HttpInbound,
    readonly port: number | undefined,
  ) {
    this.timer = setTimeout(handshakeTimeout, ctx.handshakeTimeoutMs, this).unref();
    this.done = () => {
      clearTimeout(this.timer);
      socket.removeListener('close', sniffClosed);
      // the socket lets go of this object (a closed socket outlives young-generation collections)
      (socket as Sniffed)[kSniff] = undefined;
    };
  }
}

type Sniffed = Socket & { [kSniff]?: Sniffing };

function handshakeTimeout(s: Sniffing): void {
  const { socket, ctx, protocol } = s;
  ctx.counters.handshakeTimeouts++;
  ctx.log.debug({ client: peerOf(socket), protocol, timeoutMs: ctx.handshakeTimeoutMs }, 'handshake timeout');
  if (protocol === 'http' && socket.writable && socket.bytesWritten === 0) {
    socket.end(REQUEST_TIMEOUT);
    socket.destroySoon();
  } else {
    socket.destroy();
  }
}

/** 'close' during the handshake (removed once it is done; 'close' comes once anyway). */
function sniffClosed(this: Sniffed): void {
  this[kSniff]?.done();
}

/** A client that half-closes before its first byte will never say anything. */
function endedEarly(this: Sniffed): void {
  this.destroy();
}

function firstData(this: Sniffed, first: Buffer): void {
  const socket = this;
  socket.removeListener('data', firstData);
  socket.removeListener('end', endedEarly);
  const s = socket[kSniff]!;
  try {
    dispatch(s, first);
  } catch (err) {
    // a throw ends this connection only, never the process
    s.ctx.log.error({ err, where: 'sniff' }, 'unexpected error; this connection is closed');
    socket.destroy();
  }
}

function dispatch(s: Sniffing, first: Buffer): void {
  const { socket, ctx, http } = s;
  // holdfast's own dialer connecting to holdfast: nested flows, refused here (the first byte
  // comes through the outer flow's relay, so its dial is known by now)
  if (ctx.isOwnDial?.(socket, s.port)) {
    ctx.counters.loopRefusals++;
    ctx.log.info({ client: peerOf(socket) }, 'loop refused');
    socket.destroy();
    return;
  }
  if (first[0] === 0x05) {
    s.protocol = 'socks5';
    handleSocks5(socket, first, ctx, s.done);
  } else {
    s.protocol = 'http';
    // a whole, plain CONNECT head is read here (the common tunnel); anything else goes to Node's
    // HTTP server
    if (first[0] === 0x43 && http.connectFrom(socket, first, s.done)) return;
    // Put the bytes back and let the HTTP server read them: it adds its 'data' listener while
    // handling 'connection', and the buffered chunk flows to it before any newer read.
    socket.unshift(first);
    http.handle(socket, s.done);
  }
}

/** `port`: the listener's port (the client's local port, without asking the kernel) */
export function sniff(socket: Socket, ctx: InboundContext, http: HttpInbound, port?: number): void {
  socket.on('error', ignoreError);
  if (!ctx.allowClient(socket.remoteAddress ?? '')) {
    ctx.counters.clientsRefused++;
    ctx.log.info({ client: socket.remoteAddress }, 'client refused');
    socket.destroy();
    return;
  }
  // One deadline for the whole handshake (SOCKS greeting, login and request, or the HTTP request
  // head), counted from accept. An idle timer would let a client that sends a byte now and then
  // hold the connection for ever (slowloris).
  (socket as Sniffed)[kSniff] = new Sniffing(socket, ctx, http, port);
  socket.on('close', sniffClosed);
  socket.on('end', endedEarly);
  socket.on('data', firstData); // removes itself: one chunk decides
}

const REQUEST_TIMEOUT = 'HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';

export function listen(addr: ListenAddress, ctx: InboundContext, http: HttpInbound): Promise<Listener> {
  // the bound port, once listening (a connection only arrives after that)
  let port: number | undefined;
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => sniff(socket, ctx, http, port));
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        Object.assign(new Error(`cannot listen on ${formatHostPort(addr.host, addr.port)}: ${err.code ?? err.message}`), {
          code: err.code,
        }),
      );
    });
    server.listen({ host: addr.host, port: addr.port, ipv6Only: addr.host === '::' ? false : undefined }, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => {
        // EMFILE/ENFILE on accept: counted, logged once per burst (libuv drops the connection)
        if (ctx.fdExhausted?.(err, 'accept')) return;
        ctx.log.error({ err }, 'listener error');
      });
      // read once: a listening socket's address never changes, and isSelf asks on every flow
      const a = server.address();
      const bound: ListenAddress = a && typeof a === 'object' ? { host: a.address, port: a.port } : addr;
      port = a && typeof a === 'object' ? a.port : undefined;
      resolve({
        address: addr,
        server,
        bound: () => bound,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
          }),
      });
    });
  });
}
