// One SOCKS5 client connection: greeting, request, then CONNECT (BIND and UDP ASSOCIATE answer
// 0x07 until they are built). State is per connection. The success reply is written only after
// the upstream connected (its BND.ADDR is the pinned local address); bytes the client pipelined
// after its request wait, in order, until then.
import type { Socket } from 'node:net';
import type { Destination } from '../contracts.js';
import { Reply, replyText, toSocksReply } from '../errors.js';
import { relay } from '../relay.js';
import { peerOf, type InboundContext } from './context.js';
import {
  Command,
  Method,
  encodeMethod,
  encodeReply,
  parseGreeting,
  parseRequest,
  type SocksAddress,
} from './socks5.js';

/** Greeting + request never need more than this; more unparsed bytes is garbage. */
const MAX_HANDSHAKE_BYTES = 1024;

export function destinationOf(a: SocksAddress, port: number): Destination {
  return a.kind === 'domain' ? { host: a.name, port, isName: true } : { host: a.ip, port, isName: false };
}

export function handleSocks5(socket: Socket, first: Buffer, ctx: InboundContext): void {
  let buf: Buffer = first;
  let state: 'greeting' | 'request' | 'busy' = 'greeting';
  const client = peerOf(socket);

  const fail = (reply: number, why: string) => {
    state = 'busy';
    socket.removeListener('data', onData);
    ctx.log.debug({ client, reply: replyText(reply), why }, 'socks5 refused');
    socket.end(encodeReply(reply));
    socket.destroySoon();
  };

  const step = () => {
    if (state === 'greeting') {
      const g = parseGreeting(buf);
      if (!g.ok) {
        if ('need' in g) return waitMore();
        // not SOCKS5 at all (or no methods): nothing sensible to answer, close
        state = 'busy';
        socket.removeListener('data', onData);
        ctx.log.debug({ client, why: g.why }, 'socks5 bad greeting');
        socket.end(encodeMethod(Method.NO_ACCEPTABLE));
        socket.destroySoon();
        return;
      }
      buf = buf.subarray(g.used);
      if (!g.value.methods.includes(Method.NO_AUTH)) {
        state = 'busy';
        socket.removeListener('data', onData);
        socket.end(encodeMethod(Method.NO_ACCEPTABLE));
        socket.destroySoon();
        return;
      }
      socket.write(encodeMethod(Method.NO_AUTH));
      state = 'request';
    }
    if (state === 'request') {
      const r = parseRequest(buf);
      if (!r.ok) {
        if ('need' in r) return waitMore();
        return fail(r.reply, r.why);
      }
      const rest = buf.subarray(r.used);
      buf = Buffer.alloc(0);
      if (r.value.command !== Command.CONNECT) return fail(Reply.CMD_UNSUPPORTED, `command ${r.value.command}`);
      state = 'busy';
      socket.removeListener('data', onData);
      socket.pause();
      socket.setTimeout(0);
      connect(destinationOf(r.value.address, r.value.port), rest);
    }
  };

  const waitMore = () => {
    if (buf.length > MAX_HANDSHAKE_BYTES) fail(Reply.GENERAL_FAILURE, 'handshake too long');
  };

  const onData = (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    step();
  };

  const connect = (dst: Destination, pipelined: Buffer) => {
    const flow = ctx.flows.open('socks5-connect', client, dst);
    const ac = new AbortController();
    let replied = false;
    const onEarlyClose = () => ac.abort(new Error('client left'));
    socket.once('close', onEarlyClose);
    flow.onCut((err) => {
      if (!replied) {
        ac.abort(err);
        return;
      }
      socket.resetAndDestroy();
    });
    ctx.connector.open(dst, ac.signal).then(
      (up) => {
        socket.removeListener('close', onEarlyClose);
        if (socket.destroyed || flow.ended) {
          up.socket.destroy();
          ctx.connector.release(dst, up);
          flow.end('client left');
          return;
        }
        replied = true;
        flow.pinned(up);
        socket.write(encodeReply(Reply.SUCCEEDED, { ip: up.localAddress, port: up.localPort }));
        if (pipelined.length) {
          flow.bytesUp += pipelined.length;
          up.socket.write(pipelined);
        }
        relay(socket, up.socket, flow, (end) => {
          ctx.connector.release(dst, up);
          flow.end(end.reason, end.error);
        });
      },
      (err: Error) => {
        socket.removeListener('close', onEarlyClose);
        flow.end(ac.signal.aborted ? 'client left' : 'dial failed', err);
        if (!socket.destroyed) {
          socket.end(encodeReply(toSocksReply(err)));
          socket.destroySoon();
        }
      },
    );
  };

  socket.on('data', onData);
  socket.on('error', () => {
    /* ends in 'close'; a reset client is an expected end */
  });
  socket.setTimeout(ctx.handshakeTimeoutMs, () => {
    if (state !== 'busy') socket.destroy();
  });
  step();
}
