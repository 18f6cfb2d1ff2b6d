// Absolute-form forwarding of plain HTTP through undici: one Agent per egress, so requests in
// flight finish on their interface while new ones go where the policy says now.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import type { Destination, Egress, Target } from '../contracts.js';
import type { Flow } from '../flows.js';
import { blamesPath } from '../egress/dial.js';
import { BadRequestError, hfCodeOf, toHttpStatus } from '../errors.js';
import { peerOf, type InboundContext } from './context.js';
import type { HttpInboundOptions } from './http.js';
import { errorBody, forwardableHeaders, hostOf, responseHeaders, sendError } from './http-text.js';

export interface HttpForwarder {
  /** Forward one absolute-form request for `url` and stream the answer into `res`. */
  forward(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
  /** Drop the Agent of an egress: 'close' lets requests finish, 'destroy' stops them now. */
  dropEgress(ifname: string, how: 'close' | 'destroy', err?: Error): void;
  /** Stop every Agent now. */
  close(): Promise<void>;
}

export function createHttpForwarder(ctx: InboundContext, o: HttpInboundOptions): HttpForwarder {
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
    const finish = (reason: string, err?: unknown) => {
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
      const headers = forwardableHeaders(req.rawHeaders);
      headers.push('via', `${req.httpVersion} holdfast`);
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
      );
      o.policy.connected(dst, target, egress);
      const released = () => {
        o.policy.released(dst, target, egress);
        finish('done');
      };
      if (res.writableFinished) released();
      else res.once('finish', released);
    } catch (err) {
      const cause = ac.signal.aborted && ac.signal.reason instanceof Error ? ac.signal.reason : err;
      if (!res.headersSent && !res.destroyed) {
        const status = toHttpStatus(cause);
        const body = errorBody(cause);
        res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.destroy();
      }
      finish(ac.signal.aborted ? 'aborted' : 'failed', cause);
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
          if (started) res.destroy();
          else reject(err);
        },
      });
    });
  }

  return {
    forward,
    dropEgress(ifname, how, err) {
      for (const [key, a] of agents) {
        if (a.egress.ifname !== ifname) continue;
        agents.delete(key);
        if (how === 'close') void a.agent.close();
        else void a.agent.destroy(err ?? null);
      }
    },
    async close() {
      await Promise.all([...agents.values()].map((a) => a.agent.destroy(null).catch(() => {})));
      agents.clear();
    },
  };
}
