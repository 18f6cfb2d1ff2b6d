// One SOCKS5 client connection: greeting, optional username/password (RFC 1929), request, then
// the command. State is per connection (socksv5 shared it, and crashed on interleaved logins).
// The success reply is written only after the upstream connected (BND.ADDR is the pinned local
// address); bytes the client pipelined after its request wait, in order, until then.
import type { Socket } from 'node:net';
import type { Destination } from '../contracts.js';
import { Reply, replyText, toSocksReply } from '../errors.js';
import { peerOf, type InboundContext } from './context.js';
import {
  Command,
  Method,
  encodeMethod,
  encodeReply,
  encodeUserPassStatus,
  parseGreeting,
  parseRequest,
  parseUserPass,
  type SocksAddress,
  type SocksRequest,
} from './socks5.js';
import { handleBind } from './socks5-bind.js';
import { handleUdpAssociate } from './socks5-udp.js';
import { openTunnel, type TunnelProtocol } from './tunnel.js';
import { guarded, isDestinationPort } from './validate.js';

/** Greeting + login + request never need more than this; more unparsed bytes is garbage. */
const MAX_HANDSHAKE_BYTES = 1024;

export function destinationOf(a: SocksAddress, port: number): Destination {
  return a.kind === 'domain' ? { host: a.name, port, isName: true } : { host: a.ip, port, isName: false };
}

const connectProtocol: TunnelProtocol = {
  success: (up) => encodeReply(Reply.SUCCEEDED, { ip: up.localAddress, port: up.localPort }),
  failure: (err) => encodeReply(toSocksReply(err)),
};

/** What a command handler gets once the request is read: the socket is paused. */
export interface SocksCommandContext {
  readonly socket: Socket;
  readonly client: string;
  readonly request: SocksRequest;
  readonly dst: Destination;
  /** bytes the client sent after its request */
  readonly pipelined: Buffer;
  readonly ctx: InboundContext;
}

/** Handlers for BIND and UDP ASSOCIATE (each answers 0x07 itself when ctx.socks5 is absent). */
export const socksCommands: Partial<Record<number, (c: SocksCommandContext) => void>> = {
  [Command.BIND]: handleBind,
  [Command.UDP_ASSOCIATE]: handleUdpAssociate,
};

/**
 * `handshakeDone` is called once the request is read (the listener's handshake deadline, which
 * covers greeting, login and request together, stops there).
 */
export function handleSocks5(socket: Socket, first: Buffer, ctx: InboundContext, handshakeDone: () => void = () => {}): void {
  let buf: Buffer = first;
  let state: 'greeting' | 'auth' | 'request' | 'busy' = 'greeting';
  const client = peerOf(socket);

  /** stop reading, send the last bytes, close */
  const closeWith = (bytes: Buffer) => {
    state = 'busy';
    socket.removeListener('data', onData);
    socket.end(bytes);
    socket.destroySoon();
  };
  const fail = (reply: number, why: string) => {
    ctx.counters.badHandshakes++;
    ctx.log.debug({ client, reply: replyText(reply), why }, 'socks5 refused');
    closeWith(encodeReply(reply));
  };

  const step = () => {
    if (state === 'greeting') {
      const g = parseGreeting(buf);
      if (!g.ok) {
        if ('need' in g) return waitMore();
        // not SOCKS5 at all (or no methods): no acceptable method, close
        ctx.counters.badHandshakes++;
        ctx.log.debug({ client, why: g.why }, 'socks5 bad greeting');
        return closeWith(encodeMethod(Method.NO_ACCEPTABLE));
      }
      buf = buf.subarray(g.used);
      const want = ctx.auth.required ? Method.USER_PASS : Method.NO_AUTH;
      if (!g.value.methods.includes(want)) {
        if (ctx.auth.required) ctx.counters.authFailures++;
        return closeWith(encodeMethod(Method.NO_ACCEPTABLE));
      }
      socket.write(encodeMethod(want));
      state = want === Method.USER_PASS ? 'auth' : 'request';
    }
    if (state === 'auth') {
      const a = parseUserPass(buf);
      if (!a.ok) {
        if ('need' in a) return waitMore();
        ctx.counters.authFailures++;
        return closeWith(encodeUserPassStatus(false));
      }
      buf = buf.subarray(a.used);
      if (!ctx.auth.check(a.value.username, a.value.password)) {
        ctx.counters.authFailures++;
        ctx.log.info({ client, username: a.value.username }, 'socks5 auth failed');
        return closeWith(encodeUserPassStatus(false));
      }
      socket.write(encodeUserPassStatus(true));
      state = 'request';
    }
    if (state === 'request') {
      const r = parseRequest(buf);
      if (!r.ok) {
        if ('need' in r) return waitMore();
        return fail(r.reply, r.why);
      }
      const pipelined = buf.subarray(r.used);
      buf = Buffer.alloc(0);
      const request = r.value;
      const dst = destinationOf(request.address, request.port);
      const handler =
        request.command === Command.CONNECT
          ? undefined
          : socksCommands[request.command];
      if (request.command !== Command.CONNECT && !handler) {
        return fail(Reply.CMD_UNSUPPORTED, `command ${request.command}`);
      }
      // port 0 is no destination (BIND and UDP ASSOCIATE may name 0: "any", RFC 1928)
      if (request.command === Command.CONNECT && !isDestinationPort(request.port)) {
        return fail(Reply.GENERAL_FAILURE, 'port 0');
      }
      state = 'busy';
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.pause();
      handshakeDone();
      if (handler) handler({ socket, client, request, dst, pipelined, ctx });
      else openTunnel(ctx, 'socks5-connect', socket, client, dst, pipelined, connectProtocol);
    }
  };

  const waitMore = () => {
    if (buf.length > MAX_HANDSHAKE_BYTES) fail(Reply.GENERAL_FAILURE, 'handshake too long');
  };

  // a throw anywhere in the handshake or a command's start ends this connection only
  const guardedStep = () => guarded(ctx.log, 'socks5', () => socket.destroy(), step);
  const onData = (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    guardedStep();
  };

  socket.on('data', onData);
  // a client that half-closes before its request is complete can never finish it
  const onEnd = () => {
    if (state !== 'busy') socket.destroy();
  };
  socket.on('end', onEnd);
  guardedStep();
}
