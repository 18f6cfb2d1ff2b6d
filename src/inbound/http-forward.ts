// Absolute-form forwarding of plain HTTP through undici: the connector places each request (as
// it does every flow) and hands its pinned socket to undici's `connect` hook; connections are
// pooled per egress, so requests in flight finish on their interface while new ones go where the
// policy says now.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { Client, type Dispatcher } from 'undici';
import type { CancelSignal, CloseReason, Destination, DialResult, Egress, Lease, Target } from '../contracts.js';
import { Cancel } from '../cancel.js';
import type { Flow } from '../flows.js';
import { EgressLostError, LoopError, ResumeRefusedError, toHttpStatus } from '../errors.js';
import { peerOf, type InboundContext } from './context.js';
import { resumableOf, resumeHeaders, spliceRefusal, type Headers, type Resumable } from './http-resume.js';
import { errorBody, forwardableHeaders, hostOf, responseHeaders, sendError } from './http-text.js';
import { keepAliveNow } from '../keepalive.js';
import { BOUNDED, followNative, osError, socketFd, takeBuffered, UP_ENDED, type OffloadEnd } from '../relay-native.js';

export interface HttpForwarder {
  /** Forward one absolute-form request for `url` and stream the answer into `res`. */
  forward(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
  /** Stop every connection now. */
  close(): Promise<void>;
}

export function createHttpForwarder(ctx: InboundContext): HttpForwarder {
  /**
   * Per egress, per origin: undici Clients, each with one connection pinned to that egress (the
   * connector's `pinnedConnect` hands it the socket). A new request reuses a free connection of
   * the policy's first interface; requests in flight finish on their interface, and a keep-alive
   * connection serves again only requests placed on its interface.
   */
  const pools = new Map<string, { egress: Egress; byOrigin: Map<string, Set<Client>> }>();
  /** close() ran: a resume in progress must not add a connection to the pools */
  let closed = false;
  const keyOf = (egress: Egress) => `${egress.ifname}|${egress.source}`;
  /** each Client's socket now (the connect hook records it): a body offload takes it from undici */
  const sockets = new WeakMap<Dispatcher, Socket>();

  /**
   * A free keep-alive connection of `egress` to `origin`, if the pool has one. The one taken
   * moves to the back of its set, so the busy ones gather there and the next look finds a free
   * one first (a burst of n requests looks at about n clients, not n²/2; each look allocates).
   */
  function freeClient(egress: Egress, origin: string): Client | undefined {
    const clients = pools.get(keyOf(egress))?.byOrigin.get(origin);
    if (clients) {
      for (const c of clients) {
        const st = c.stats;
        if (st.connected && st.size === 0) {
          clients.delete(c);
          clients.add(c);
          return c;
        }
      }
    }
    return undefined;
  }

  /**
   * A Client for the socket `up` just dialed, joining its egress's pool until it disconnects.
   * `drop()`: the request failed before the Client took the socket (undici refused it at
   * dispatch): destroy both.
   */
  function adopt(up: DialResult, origin: string): { client: Client; drop(): void } {
    const key = keyOf(up.egress);
    let pool = pools.get(key);
    if (!pool) pools.set(key, (pool = { egress: up.egress, byOrigin: new Map() }));
    let clients = pool.byOrigin.get(origin);
    if (!clients) pool.byOrigin.set(origin, (clients = new Set()));
    const connect = ctx.connector.pinnedConnect(up.egress, up.socket);
    const client = new Client(origin, {
      keepAliveTimeout: 4000,
      connectTimeout: 0x7fffffff, // our dialer enforces dial.timeout
      connect: (o, cb) =>
        connect(o, (err, s) => {
          if (s) sockets.set(client, s);
          (cb as (e: Error | null, s: Socket | null) => void)(err, s);
        }),
    });
    const [set, byOrigin] = [clients, pool.byOrigin];
    const forget = () => {
      set.delete(client);
      if (set.size === 0 && byOrigin.get(origin) === set) byOrigin.delete(origin);
    };
    client.once('disconnect', () => {
      // its connection is gone: no longer free for new requests; queued ones still finish
      // (a new dial on the same egress)
      forget();
      client.close().catch(() => {});
    });
    set.add(client);
    const drop = () => {
      if (!connect.unclaimed()) return;
      forget();
      client.destroy().catch(() => {});
    };
    return { client, drop };
  }

  const originOf = (target: Target, port: number) =>
    `http://${target.family === 6 ? `[${target.ip}]` : target.ip}:${port}`;

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
    // what an AbortController would do here, without its EventTarget per request: the dial
    // listens to it, the body relay reads it (tunnels use the same: tunnel.ts)
    const cancel = new Cancel();
    /** abort the dial or the request under way (the relay hears it directly: no signal listener) */
    const abort = (err: Error) => {
      cancel.abort(err);
      body?.abort(err);
    };
    let settled = false;
    const finish = (reason: CloseReason, err?: unknown) => {
      if (settled) return;
      settled = true;
      socket.removeListener('close', onClientGone);
      flow.end(reason, err);
    };
    // the upstream of the response being streamed (one per attempt) and how to resume it
    let body: ReturnType<typeof relayBody> | undefined;
    flow.onCut((err) => {
      // a download that can continue elsewhere: drop only its upstream (the relay resumes)
      if (body?.resumable(err)) return;
      abort(err);
      if (res.headersSent) req.socket.resetAndDestroy();
    });
    const onClientGone = () => {
      if (res.writableFinished) return;
      // a body the native relay wrote whole was delivered, even if the client closed before the
      // relay's report came (it ends the response, and then the relay too)
      if (body?.deliveredWhole()) return finish('done');
      abort(new Error('client left'));
      finish('client left');
    };
    res.once('close', onClientGone);
    // a pipelined request's response waits in a queue, unattached: if the client goes, that
    // response never sees 'close' (nor 'finish'), so watch the connection itself too
    const socket = req.socket;
    socket.once('close', onClientGone);
    const hasBody =
      req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');

    let dropUnclaimed: (() => void) | undefined;
    try {
      // the name through the DNS of the interface that will carry it (loops refused); a free
      // connection of the policy's first interface, else a new one raced across the candidates
      const up = await ctx.connector.openOrReuse(dst, cancel, (e, t) => freeClient(e, originOf(t, dst.port)));
      const { egress, target, attempts } = up;
      const origin = originOf(target, dst.port);
      let conn: Client;
      if ('reused' in up) conn = up.reused;
      else ({ client: conn, drop: dropUnclaimed } = adopt(up, origin));
      flow.pinned({ egress, target, localAddress: egress.source, attempts });
      // the absolute-form target decides the Host the origin sees (RFC 9112 3.2.2), whatever the client's header said
      const headers = forwardableHeaders(req.rawHeaders, true);
      headers.push('host', url.host, 'via', `${req.httpVersion} holdfast`);
      const path = url.pathname + url.search;
      const resumeAttempts = !hasBody && req.method === 'GET' ? (ctx.forward?.resumeAttempts ?? 0) : 0;
      body = relayBody(res, flow, cancel, resumeAttempts, {
        // a new dial (never a pooled connection: the old one's interface may be dead) on the
        // interface the policy picks now
        async reopen(signal) {
          const again = await ctx.connector.openOrReuse(dst, signal, () => undefined);
          if ('reused' in again) throw new Error('unreachable: reuse refused');
          if (closed) {
            // holdfast is stopping: no new pooled connection
            again.socket.destroy();
            throw new EgressLostError('not resumed: holdfast is stopping');
          }
          const o = originOf(again.target, dst.port);
          const { client: c, drop } = adopt(again, o);
          return { client: c, origin: o, placed: again, drop, lease: () => ctx.connector.lease(dst, again) };
        },
        method: req.method ?? 'GET',
        path,
        headers,
        // the upstream failed mid-response, for good (the client's connection is destroyed)
        onLateError(err) {
          if (!cancel.aborted) finish('upstream error', err);
        },
      });
      await body.start(conn, {
        origin,
        path,
        method: req.method as 'GET',
        headers,
        body: hasBody ? Readable.from(countUp(req, flow), { objectMode: false }) : null,
      });
      // the server answered: the flow holds its placement until it ends, however it ends
      // (a resumed download moves it: Flow.moved)
      if (body.moves === 0) flow.hold(ctx.connector.lease(dst, up));
      if (res.writableFinished) finish('done');
      else res.once('finish', () => finish('done'));
    } catch (err) {
      dropUnclaimed?.();
      const cause = cancel.aborted && cancel.reason instanceof Error ? cancel.reason : err;
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
      finish(cancel.aborted ? 'client left' : 'dial failed', cause);
    }
  }

  /** How the native relay saw a body's upstream fail, as an error with a code (the close line's). */
  function upstreamEnd(reason: string): Error {
    // ENODATA: the upstream closed before Content-Length (undici's name for it)
    return reason === 'ENODATA'
      ? Object.assign(new Error('upstream closed before the end of the body (Content-Length)'), { code: 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' })
      : osError(reason);
  }

  async function* countUp(req: IncomingMessage, flow: { bytesUp: number }): AsyncGenerator<Buffer> {
    for await (const chunk of req) {
      flow.bytesUp += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
  }

  interface Reopened {
    client: Client;
    origin: string;
    placed: Pick<DialResult, 'egress' | 'target' | 'localAddress'>;
    /** the request failed before the Client took the socket: destroy both */
    drop(): void;
    lease(): Lease;
  }

  interface RelayPlan {
    reopen(signal: CancelSignal): Promise<Reopened>;
    /** the request's method (a response to HEAD has no body, whatever its Content-Length says) */
    method: string;
    path: string;
    /** the request's headers as first sent (flat name, value list) */
    headers: string[];
    onLateError(err: Error): void;
  }

  /**
   * Stream one response into `res`, chunk by chunk, with backpressure (undici's dispatch
   * handler: no intermediate stream). `start` resolves once the response head was written to the
   * client and rejects if the request failed before that (the caller then answers 502/504). If
   * the upstream dies mid-body and the response can be resumed (see resumableOf), up to
   * `attempts` Range requests on new connections continue it; only a 206 of exactly the missing
   * range with the same validator is spliced in. Any other failure after the head destroys the
   * client connection.
   *
   * A body of known length, at least `relay.offloadAfter` bytes, leaves undici at its head: the
   * native relay splices it from the upstream socket into the client's (no copy through JS), then
   * Node's server goes on with the client's connection; the upstream connection is not reused.
   */
  function relayBody(res: ServerResponse, flow: Flow, signal: CancelSignal, attempts: number, plan: RelayPlan) {
    let controller: Dispatcher.DispatchController | undefined;
    let resume: Resumable | undefined;
    /** body bytes written to the client */
    let sent = 0;
    let moves = 0;
    let resuming = false;
    let done = false;
    /** the body on the native relay now; `closing`: it was stopped to be resumed after this error */
    let native: { id: number; length: number; closing?: Error } | undefined;
    // the request under way stops when the forward aborts (abort(), below) or had aborted before it began
    const onAbort = () => stopUpstream(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    res.on('drain', () => controller?.resume());

    /** Stop the upstream of the body under way: undici's request, or the native relay's tunnel. */
    const stopUpstream = (err: Error, thenResume = false) => {
      if (!native) return controller?.abort(err);
      if (thenResume) native.closing = err;
      ctx.relay?.engine?.close(native.id, false);
    };

    const fail = (err: Error) => {
      done = true;
      plan.onLateError(err);
      res.destroy();
    };

    /**
     * The dispatch handler of a request whose body goes to `res` (the first request and each
     * resume) on Client `conn`: only what happens at the head and on an error differs between them.
     */
    const toClient = (
      conn: Dispatcher,
      onHead: (c: Dispatcher.DispatchController, statusCode: number, headers: Headers) => void,
      onError: (err: Error) => void,
    ): Dispatcher.DispatchHandler => {
      /** this request's body went to the native relay: what undici says of it no longer counts */
      let handedOff = false;
      return {
        onRequestStart(c) {
          controller = c;
          if (signal.aborted) onAbort();
        },
        onResponseStart(c, statusCode, headers) {
          if (statusCode < 200) return; // informational: Node's server speaks for itself
          onHead(c, statusCode, headers as Headers);
          const length = offloadable(statusCode, headers as Headers);
          if (length > 0 && !c.aborted) {
            // undici stops at the head and gives back what it read past it (its parser pauses)
            c.pause();
            process.nextTick(() => {
              if (offload(c, conn, length)) handedOff = true;
              else c.resume();
            });
          }
        },
        onResponseData(c, chunk) {
          // undici hands over an empty chunk after about every other one: writing it would cost a
          // write(2) of 0 bytes and a trip through the response stream each time
          if (chunk.length === 0 || handedOff) return;
          sent += chunk.length;
          flow.bytesDown += chunk.length;
          if (!res.write(chunk)) c.pause();
        },
        onResponseEnd() {
          if (handedOff) return;
          done = true;
          res.end();
        },
        onResponseError(_c, err) {
          if (!handedOff) onError(err);
        },
      };
    };

    /** The body's length if it may go to the native relay, else 0. */
    const offloadable = (statusCode: number, h: Headers): number => {
      const after = ctx.relay?.afterBytes ?? 0; // 0: never offload
      if (!ctx.relay?.engine || !(after > 0) || plan.method === 'HEAD' || statusCode === 204 || statusCode === 304) return 0;
      if (h['transfer-encoding'] !== undefined) return 0;
      const cl = h['content-length'];
      if (typeof cl !== 'string' || !/^\d{1,15}$/.test(cl)) return 0;
      const length = Number(cl);
      return length >= after ? length : 0;
    };

    /**
     * At the tick after the head (no I/O in between): hand the body to the native relay, if the
     * head has reached the client's socket and both sockets are there. False: undici goes on.
     */
    const offload = (c: Dispatcher.DispatchController, conn: Dispatcher, length: number): boolean => {
      const eng = ctx.relay?.engine;
      const up = sockets.get(conn);
      const down = res.socket;
      if (!eng || !up || !down || c.aborted || signal.aborted || done) return false;
      res.flushHeaders(); // writeHead only stored the head (a resume's went out already: this writes nothing)
      // the head must be in the kernel before the body: nothing of `res` may wait in Node
      if (res.writableLength !== 0 || down.writableLength !== 0 || down.destroyed || up.destroyed) return false;
      const clientFd = socketFd(down);
      const upstreamFd = socketFd(up);
      if (clientFd < 0 || upstreamFd < 0) return false;
      const early = takeBuffered(up); // the body's first bytes (undici gave them back)
      if (early && early.length >= length) {
        // all of it is here already: JS writes it
        up.unshift(early);
        return false;
      }
      keepAliveNow(up); // its keepalive, if its second has not come yet
      let id: number;
      try {
        id = eng.start(clientFd, upstreamFd, null, early, UP_ENDED | BOUNDED, (end) => onNativeDone(end), length);
      } catch {
        // the relay would not take it (no fds, no pipes): undici goes on with the bytes it gave back
        if (early) up.unshift(early);
        return false;
      }
      native = { id, length };
      const settle = followNative(flow, 'bytesDown', eng, id, 1);
      const onNativeDone = (end: OffloadEnd) => {
        const closing = native?.closing;
        native = undefined;
        settle(end.bytesDown);
        sent += end.bytesDown;
        if (end.reason === 'done') {
          done = true;
          res.end();
        } else if (end.reason === 'closed') {
          // stopped here: aborted (the forward handles the rest), or to be resumed
          if (closing) lost(closing);
        } else if (end.side === 'client') {
          // the client's connection failed: Node's server hears it too; its 'close' ends the flow
          done = true;
          res.destroy();
        } else {
          lost(upstreamEnd(end.reason));
        }
      };
      // undici lets go of the connection (its request fails, unheard); the relay's dup of the fd carries the body
      up.destroy(Object.assign(new Error('body handed to the native relay'), { code: 'HF_OFFLOADED' }));
      return true;
    };

    /** The upstream died after the head: resume if allowed, else cut the client. */
    const lost = (err: Error) => {
      if (done) return;
      if (signal.aborted || !resume || attempts <= 0 || sent >= resume.length) return fail(err);
      attempts--;
      resuming = true;
      void again(err);
    };

    const again = async (cause: Error) => {
      const r = resume!;
      const offset = sent;
      const from = flow.interface;
      let up: Reopened | undefined;
      try {
        up = await plan.reopen(signal);
        const u = up;
        const headers = resumeHeaders(plan.headers, r, offset);
        await new Promise<void>((resolve, reject) => {
          u.client.dispatch(
            { origin: u.origin, path: plan.path, method: 'GET', headers, body: null },
            toClient(
              u.client,
              (c, statusCode, h) => {
                const why = spliceRefusal(statusCode, h, r, offset);
                if (why) {
                  c.abort(new ResumeRefusedError(`resume refused: ${why}`));
                  return;
                }
                resuming = false;
                moves++;
                ctx.forward!.counters.resumes++;
                flow.resumedOn(u.placed, u.lease(), offset);
                resolve();
              },
              (err) => (resuming ? reject(err) : lost(err)),
            ),
          );
        });
      } catch (err) {
        up?.drop();
        resuming = false;
        if (signal.aborted) return fail(err as Error);
        ctx.forward!.counters.resumeFailures++;
        flow.log.warn({ from, offset, cause: cause.message, err: (err as Error).message }, 'flow resume failed');
        // the client is cut: the flow ends as 'cut' if its interface was lost, else 'upstream error'
        return fail(err as Error);
      }
    };

    return {
      get moves() {
        return moves;
      },
      /**
       * The body is on the native relay, which has written all of it to the client: the client
       * may have read the last byte and closed before the relay's report reached JS (which is
       * what ends the response).
       */
      deliveredWhole(): boolean {
        const eng = ctx.relay?.engine;
        return native !== undefined && eng !== undefined && eng.bytes(native.id, 1) >= native.length;
      },
      /** The forward was aborted (`signal` too): stop the request under way, if any. */
      abort(err: Error): void {
        if (!done) stopUpstream(err);
      },
      /**
       * The flow is being cut (its interface lost): true if the download continues elsewhere
       * (its upstream is dropped and a resume begins), false if it must be cut as before.
       */
      resumable(err: Error): boolean {
        // only the loss of the interface (a shutdown cuts for good)
        if (!(err instanceof EgressLostError) || done || !resume || attempts <= 0 || signal.aborted) return false;
        if (resuming) return true; // a resume already under way decides
        stopUpstream(err, true);
        return true;
      },
      start(client: Dispatcher, opts: Dispatcher.DispatchOptions): Promise<void> {
        return new Promise((resolve, reject) => {
          let started = false;
          client.dispatch(
            opts,
            toClient(
              client,
              (_c, statusCode, headers) => {
                started = true;
                if (attempts > 0 && opts.method === 'GET') resume = resumableOf(statusCode, headers);
                res.sendDate = false;
                res.writeHead(statusCode, responseHeaders(headers));
                resolve();
              },
              (err) => (started ? lost(err) : reject(err)),
            ),
          );
        });
      },
    };
  }

  return {
    forward,
    async close() {
      closed = true;
      const all = [...pools.values()].flatMap((p) => [...p.byOrigin.values()].flatMap((s) => [...s]));
      pools.clear();
      await Promise.all(all.map((c) => c.destroy(null).catch(() => {})));
    },
  };
}
