// The HTTP proxy inbound: CONNECT tunnels, absolute-form forwarding of plain HTTP through undici
// (one Agent per egress, so requests in flight finish on their interface while new ones go where
// the policy says now), and requests addressed to holdfast itself (/status and friends).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import type { CloseReason, Destination, Dialer, Egress, EgressPolicy, Target } from '../contracts.js';
import type { Flow } from '../flows.js';
import { blamesPath } from '../egress/dial.js';
import { BadRequestError, LoopError, hfCodeOf, toHttpStatus } from '../errors.js';
import { peerOf, type InboundContext } from './context.js';
import { hostIsOurs } from './host.js';
import { openTunnel, type TunnelProtocol } from './tunnel.js';
import { isLoopbackIp } from '../net/addr.js';
import { guarded } from './validate.js';

export type LocalHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface HttpInboundOptions {
  readonly policy: EgressPolicy;
  readonly dialer: Dialer;
  readonly maxHeaderBytes: number;
  /** requests addressed to holdfast itself, by path */
  readonly local: ReadonlyMap<string, LocalHandler>;
  /** true if host:port is one of holdfast's own listeners (a loop) */
  readonly isSelf: (host: string, port: number) => boolean;
}

/** Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded. */
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
]);

/** Flat [name, value, ...] without hop-by-hop headers and those the Connection header names. */
export function forwardableHeaders(raw: readonly string[]): string[] {
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    if (k === 'connection' || k === 'proxy-connection') {
      for (const t of raw[i + 1].split(',')) {
        const n = t.trim().toLowerCase();
        if (n) (named ??= new Set()).add(n);
      }
    }
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    if (hopByHop.has(k) || named?.has(k)) continue;
    out.push(raw[i], raw[i + 1]);
  }
  return out;
}

function responseHeaders(h: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  let named: Set<string> | undefined;
  const conn = h['connection'];
  if (conn) for (const t of String(conn).split(',')) (named ??= new Set()).add(t.trim().toLowerCase());
  const out: Record<string, string | string[]> = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || hopByHop.has(k) || named?.has(k)) continue;
    out[k] = v;
  }
  return out;
}

function hostOf(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

function countHost(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i].length === 4 && raw[i].toLowerCase() === 'host') n++;
  return n;
}

/** Flat [name, value, ...] without Host (the forwarder sets it from the URL). */
export function withoutHost(h: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < h.length; i += 2) if (h[i].toLowerCase() !== 'host') out.push(h[i], h[i + 1]);
  return out;
}

/** "host:port" of a CONNECT request target. */
export function parseAuthority(s: string): Destination | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:/[\]@]+)):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  if (m[1] !== undefined && isIP(m[1]) !== 6) return undefined;
  const host = m[1] ?? m[2];
  return { host, port, isName: isIP(host) === 0 };
}

function plainReply(status: number, text: string, body: string): string {
  return (
    `HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

const statusText: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  407: 'Proxy Authentication Required',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

const clientErrorText: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
};

function errorBody(err: unknown): string {
  return `holdfast: ${hfCodeOf(err)}: ${(err as Error).message}\n`;
}

export interface HttpInbound {
  readonly server: Server;
  /**
   * Hand over a client connection (its first bytes unshifted back). `onHead` is called when the
   * first request head has been read (the listener's handshake deadline stops there).
   */
  handle(socket: Socket, onHead?: () => void): void;
  /** New limits (a reload) for connections from now on. */
  configure(opts: { maxHeaderBytes: number; handshakeTimeoutMs: number }): void;
  /** Drop the Agent of an egress: 'close' lets requests finish, 'destroy' stops them now. */
  dropEgress(ifname: string, how: 'close' | 'destroy', err?: Error): void;
  close(): Promise<void>;
}

export function createHttpInbound(ctx: InboundContext, o: HttpInboundOptions): HttpInbound {
  const agents = new Map<string, { agent: Agent; egress: Egress }>();

  /**
   * Sockets already dialed for a request (a race across interfaces picked their egress), waiting
   * for that egress's Agent to ask for a connection to their origin. Unclaimed ones (the pool had
   * a free connection after all) are closed after a moment.
   */
  const predialed = new Map<string, Socket[]>();
  const stash = (egress: Egress, target: Target, socket: Socket) => {
    const key = `${egress.ifname}|${egress.source}|${target.ip}|${target.port}`;
    const list = predialed.get(key) ?? [];
    list.push(socket);
    predialed.set(key, list);
    setTimeout(() => {
      const l = predialed.get(key);
      const i = l?.indexOf(socket) ?? -1;
      if (i < 0) return;
      l!.splice(i, 1);
      if (l!.length === 0) predialed.delete(key);
      socket.destroy();
    }, 5000).unref();
  };
  const claim = (egress: Egress, target: Target): Socket | undefined => {
    const key = `${egress.ifname}|${egress.source}|${target.ip}|${target.port}`;
    const l = predialed.get(key);
    const s = l?.shift();
    if (l && l.length === 0) predialed.delete(key);
    return s;
  };

  function agentFor(egress: Egress): Agent {
    const key = `${egress.ifname}|${egress.source}`;
    const hit = agents.get(key);
    if (hit) return hit.agent;
    const agent = new Agent({
      keepAliveTimeout: 4000,
      connectTimeout: 0x7fffffff, // our dialer enforces dial.timeout
      // every connection of this pool is pinned to `egress`
      connect(opts, cb) {
        const ip = hostOf(opts.hostname);
        const family = isIP(ip);
        if (family === 0) {
          cb(new BadRequestError(`not an address: ${ip}`), null);
          return;
        }
        const target: Target = { ip, family: family as 4 | 6, port: Number(opts.port) || 80 };
        const ready = claim(egress, target);
        if (ready) {
          // never call back synchronously: undici marks the client as connecting after this returns
          process.nextTick(cb, null, ready);
          return;
        }
        o.dialer.dial(target, egress).then(
          (s) => cb(null, s),
          (err) => {
            if (blamesPath(err)) o.policy.failed(egress.ifname, hfCodeOf(err));
            cb(err, null);
          },
        );
      },
    });
    agents.set(key, { agent, egress });
    return agent;
  }

  /** Has the pool of `egress` a free keep-alive connection to `origin`? */
  function hasFree(egress: Egress, origin: string): boolean {
    const a = agents.get(`${egress.ifname}|${egress.source}`);
    const st = a?.agent.stats[origin];
    return st !== undefined && 'free' in st && st.free > 0;
  }

  async function forward(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const client = peerOf(req.socket);
    const host = hostOf(url.hostname);
    const dst: Destination = { host, port: Number(url.port) || 80, isName: isIP(host) === 0 };
    let flow: Flow;
    try {
      flow = ctx.flows.open('http-forward', client, dst);
    } catch (err) {
      ctx.counters.limitRefusals++;
      return sendError(res, toHttpStatus(err), errorBody(err));
    }
    const ac = new AbortController();
    let settled = false;
    const finish = (reason: CloseReason, err?: unknown) => {
      if (settled) return;
      settled = true;
      socket.removeListener('close', onClientGone);
      flow.end(reason, err);
    };
    flow.onCut((err) => {
      ac.abort(err);
      if (res.headersSent) req.socket.resetAndDestroy();
    });
    const onClientGone = () => {
      if (!res.writableFinished) {
        ac.abort(new Error('client left'));
        finish('client left');
      }
    };
    res.once('close', onClientGone);
    // a pipelined request's response waits in a queue, unattached: if the client goes, that
    // response never sees 'close' (nor 'finish'), so watch the connection itself too
    const socket = req.socket;
    socket.once('close', onClientGone);
    const hasBody =
      req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');

    try {
      // the name through the DNS of the interface that will carry it; loops refused
      const targets = await ctx.connector.resolve(dst);
      const target = targets[0];
      const candidates = await o.policy.candidates(target, dst);
      const origin = `http://${target.family === 6 ? `[${target.ip}]` : target.ip}:${dst.port}`;
      let egress = candidates[0];
      let attempts = '';
      if (candidates.length > 1 && !hasFree(egress, origin)) {
        // a new connection with a choice of interfaces: race them now (fallback), and hand the
        // winner to its interface's pool
        const up = await ctx.connector.dialTarget(dst, target, ac.signal);
        egress = up.egress;
        attempts = up.attempts;
        stash(egress, target, up.socket);
      }
      flow.pinned({ egress, target, localAddress: egress.source, attempts });
      // the absolute-form target decides the Host the origin sees (RFC 9112 3.2.2), whatever the client's header said
      const headers = withoutHost(forwardableHeaders(req.rawHeaders));
      headers.push('host', url.host, 'via', `${req.httpVersion} holdfast`);
      await forwardTo(
        agentFor(egress),
        {
          origin,
          path: url.pathname + url.search,
          method: req.method as 'GET',
          headers,
          body: hasBody ? Readable.from(countUp(req, flow), { objectMode: false }) : null,
        },
        res,
        flow,
        ac.signal,
        // the upstream failed mid-response (the client's connection is destroyed)
        (err) => {
          if (!ac.signal.aborted) finish('upstream error', err);
        },
      );
      // the server answered: the flow holds its placement until it ends, however it ends
      flow.hold(o.policy.lease(dst, target, egress));
      if (res.writableFinished) finish('done');
      else res.once('finish', () => finish('done'));
    } catch (err) {
      const cause = ac.signal.aborted && ac.signal.reason instanceof Error ? ac.signal.reason : err;
      if (cause instanceof LoopError) ctx.counters.loopRefusals++;
      else ctx.fdExhausted?.(cause, 'dial');
      if (!res.headersSent && !res.destroyed) {
        const status = toHttpStatus(cause);
        const body = errorBody(cause);
        res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.destroy();
      }
      // the client left (or the flow was cut: Flow.end says so), else no answer came
      finish(ac.signal.aborted ? 'client left' : 'dial failed', cause);
    }
  }

  async function* countUp(req: IncomingMessage, flow: { bytesUp: number }): AsyncGenerator<Buffer> {
    for await (const chunk of req) {
      flow.bytesUp += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
  }

  /**
   * Send one request through `agent` and stream the response into `res`, chunk by chunk, with
   * backpressure (undici's dispatch handler: no intermediate stream). Resolves once the response
   * head was written to the client; rejects if the request failed before that (the caller then
   * answers 502/504). A failure after the head destroys the client connection.
   */
  function forwardTo(
    agent: Agent,
    opts: Dispatcher.DispatchOptions,
    res: ServerResponse,
    flow: { bytesDown: number },
    signal: AbortSignal,
    onLateError: (err: Error) => void,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      let controller: Dispatcher.DispatchController | undefined;
      let started = false;
      const onAbort = () => controller?.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => signal.removeEventListener('abort', onAbort);
      res.on('drain', () => controller?.resume());
      // a client that leaves aborts `signal` (see forward)
      agent.dispatch(opts, {
        onRequestStart(c) {
          controller = c;
          if (signal.aborted) onAbort();
        },
        onResponseStart(_c, statusCode, headers) {
          if (statusCode < 200) return; // informational: Node's server speaks for itself
          started = true;
          res.sendDate = false;
          res.writeHead(statusCode, responseHeaders(headers as Record<string, string | string[] | undefined>));
          resolve();
        },
        onResponseData(c, chunk) {
          flow.bytesDown += chunk.length;
          if (!res.write(chunk)) c.pause();
        },
        onResponseEnd() {
          cleanup();
          res.end();
        },
        onResponseError(_c, err) {
          cleanup();
          if (started) {
            onLateError(err);
            res.destroy();
          } else reject(err);
        },
      });
    });
  }

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
    if (!authorized(req)) {
      res.writeHead(407, {
        'proxy-authenticate': 'Basic realm="holdfast", charset="UTF-8"',
        'content-type': 'text/plain; charset=utf-8',
      });
      res.end('holdfast: proxy authentication needed\n');
      return;
    }
    forward(req, res, url).catch((err) => {
      ctx.log.error({ err }, 'http forward failed unexpectedly');
      res.destroy();
    });
  }

  function local(req: IncomingMessage, res: ServerResponse, pathAndQuery: string): void {
    const path = pathAndQuery.split('?')[0];
    // holdfast's own pages: open to loopback clients; others need the proxy's credentials
    // (as Authorization, since the request is addressed to holdfast), except the PAC file
    if (ctx.auth.required && path !== '/proxy.pac' && !isLoopbackIp(req.socket.remoteAddress ?? '')) {
      if (!ctx.auth.checkBasic(req.headers['authorization'])) {
        ctx.counters.authFailures++;
        res.writeHead(401, { 'www-authenticate': 'Basic realm="holdfast", charset="UTF-8"', 'content-type': 'text/plain' });
        res.end('holdfast: authentication needed\n');
        return;
      }
    }
    // DNS rebinding: a web page must not read holdfast's pages through a name it controls
    if (path !== '/proxy.pac' && !hostIsOurs(req.headers.host)) {
      return sendError(res, 403, `holdfast: my pages answer requests to an address or localhost, not to "${req.headers.host}"\n`);
    }
    const h = o.local.get(path);
    if (h) return h(req, res);
    sendError(res, 404, `holdfast: no such page: ${path}\n`);
  }

  function sendError(res: ServerResponse, status: number, body: string): void {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  const connectProtocol: TunnelProtocol = {
    success: () => 'HTTP/1.1 200 Connection established\r\n\r\n',
    failure: (err) => {
      const status = toHttpStatus(err);
      return plainReply(status, statusText[status] ?? 'Error', errorBody(err));
    },
  };

  function onConnect(req: IncomingMessage, socket: Socket, head: Buffer): void {
    guarded(ctx.log, 'http connect', () => socket.destroy(), () => connect(req, socket, head));
  }

  function connect(req: IncomingMessage, socket: Socket, head: Buffer): void {
    headRead(socket);
    socket.on('error', () => {
      /* ends in 'close' */
    });
    // Node hands the socket over unread: after the answer nothing reads it, so a client's FIN
    // would never be seen; destroy it once the answer is out
    const refuse = (answer: string) => {
      socket.end(answer);
      socket.destroySoon();
    };
    if (!authorized(req)) return refuse(authRequired);
    const dst = parseAuthority(req.url ?? '');
    if (!dst) return refuse(plainReply(400, 'Bad Request', 'holdfast: CONNECT needs host:port\n'));
    if (o.isSelf(dst.host, dst.port)) {
      ctx.counters.loopRefusals++;
      return refuse(plainReply(403, 'Forbidden', 'holdfast: refusing to CONNECT to myself\n'));
    }
    socket.pause();
    openTunnel(ctx, 'http-connect', socket, peerOf(socket), dst, head, connectProtocol);
  }

  /** Proxy-Authorization, when auth is on. */
  function authorized(req: IncomingMessage): boolean {
    if (!ctx.auth.required) return true;
    if (ctx.auth.checkBasic(req.headers['proxy-authorization'])) return true;
    ctx.counters.authFailures++;
    return false;
  }
  const authRequired =
    'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="holdfast", charset="UTF-8"\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nConnection: close\r\n\r\nholdfast: proxy authentication needed\n';

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
    configure(opts) {
      // read by Node for each new connection's parser (set from the constructor option)
      (server as Server & { maxHeaderSize: number }).maxHeaderSize = opts.maxHeaderBytes;
      server.headersTimeout = opts.handshakeTimeoutMs;
    },
    dropEgress(ifname, how, err) {
      for (const [key, a] of agents) {
        if (a.egress.ifname !== ifname) continue;
        agents.delete(key);
        if (how === 'close') void a.agent.close();
        else void a.agent.destroy(err ?? null);
      }
    },
    async close() {
      server.closeAllConnections();
      await Promise.all([...agents.values()].map((a) => a.agent.destroy(null).catch(() => {})));
      agents.clear();
    },
  };
}
