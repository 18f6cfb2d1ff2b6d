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
import { isDestinationPort } from './validate.js';

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

/** Where a connection in its SOCKS5 handshake keeps its session (read by the listeners below). */
const kSession = Symbol('holdfast.socks5');
type InSession = Socket & { [kSession]?: Socks5Session };

function noop(): void {}

const EMPTY = Buffer.alloc(0);

function sessionData(this: InSession, chunk: Buffer): void {
  const s = this[kSession]!;
  s.buf = s.buf.length === 0 ? chunk : Buffer.concat([s.buf, chunk]);
  s.guardedStep();
}

/** A client that half-closes before its request is complete can never finish it. */
function sessionEnd(this: InSession): void {
  if (this[kSession]?.state !== 'busy') this.destroy();
}

/**
 * One connection's handshake: one object, with listeners shared by every connection. State is
 * per connection (socksv5 shared it, and crashed on interleaved logins).
 */
class Socks5Session {
  state: 'greeting' | 'auth' | 'request' | 'busy' = 'greeting';
  readonly client: string;

  constructor(
    readonly socket: Socket,
    public buf: Buffer,
    readonly ctx: InboundContext,
    readonly handshakeDone: () => void,
  ) {
    this.client = peerOf(socket);
  }

  /** stop reading, send the last bytes, close */
  closeWith(bytes: Buffer): void {
    this.state = 'busy';
    this.socket.removeListener('data', sessionData);
    this.socket.end(bytes);
    this.socket.destroySoon();
  }

  fail(reply: number, why: string): void {
    this.ctx.counters.badHandshakes++;
    this.ctx.log.debug({ client: this.client, reply: replyText(reply), why }, 'socks5 refused');
    this.closeWith(encodeReply(reply));
  }

  waitMore(): void {
    if (this.buf.length > MAX_HANDSHAKE_BYTES) this.fail(Reply.GENERAL_FAILURE, 'handshake too long');
  }

  /** a throw anywhere in the handshake or a command's start ends this connection only */
  guardedStep(): void {
    try {
      this.step();
    } catch (err) {
      this.ctx.log.error({ err, where: 'socks5' }, 'unexpected error; this connection is closed');
      this.socket.destroy();
    }
  }

  step(): void {
    const { socket, ctx } = this;
    if (this.state === 'greeting') {
      const g = parseGreeting(this.buf);
      if (!g.ok) {
        if ('need' in g) return this.waitMore();
        // not SOCKS5 at all (or no methods): no acceptable method, close
        ctx.counters.badHandshakes++;
        ctx.log.debug({ client: this.client, why: g.why }, 'socks5 bad greeting');
        return this.closeWith(encodeMethod(Method.NO_ACCEPTABLE));
      }
      this.buf = this.buf.subarray(g.used);
      const want = ctx.auth.required ? Method.USER_PASS : Method.NO_AUTH;
      if (!g.value.methods.includes(want)) {
        if (ctx.auth.required) ctx.counters.authFailures++;
        return this.closeWith(encodeMethod(Method.NO_ACCEPTABLE));
      }
      socket.write(encodeMethod(want));
      this.state = want === Method.USER_PASS ? 'auth' : 'request';
    }
    if (this.state === 'auth') {
      const a = parseUserPass(this.buf);
      if (!a.ok) {
        if ('need' in a) return this.waitMore();
        ctx.counters.authFailures++;
        return this.closeWith(encodeUserPassStatus(false));
      }
      this.buf = this.buf.subarray(a.used);
      if (!ctx.auth.check(a.value.username, a.value.password)) {
        ctx.counters.authFailures++;
        ctx.log.info({ client: this.client, username: a.value.username }, 'socks5 auth failed');
        return this.closeWith(encodeUserPassStatus(false));
      }
      socket.write(encodeUserPassStatus(true));
      this.state = 'request';
    }
    if (this.state === 'request') {
      const r = parseRequest(this.buf);
      if (!r.ok) {
        if ('need' in r) return this.waitMore();
        return this.fail(r.reply, r.why);
      }
      const pipelined = this.buf.subarray(r.used);
      this.buf = EMPTY;
      const request = r.value;
      const dst = destinationOf(request.address, request.port);
      const handler = request.command === Command.CONNECT ? undefined : socksCommands[request.command];
      if (request.command !== Command.CONNECT && !handler) {
        return this.fail(Reply.CMD_UNSUPPORTED, `command ${request.command}`);
      }
      // port 0 is no destination (BIND and UDP ASSOCIATE may name 0: "any", RFC 1928)
      if (request.command === Command.CONNECT && !isDestinationPort(request.port)) {
        return this.fail(Reply.GENERAL_FAILURE, 'port 0');
      }
      this.state = 'busy';
      socket.removeListener('data', sessionData);
      socket.removeListener('end', sessionEnd);
      (socket as InSession)[kSession] = undefined; // the session is over: the socket lets go of it
      socket.pause();
      this.handshakeDone();
      const client = this.client;
      if (handler) handler({ socket, client, request, dst, pipelined, ctx });
      else openTunnel(ctx, 'socks5-connect', socket, client, dst, pipelined, connectProtocol);
    }
  }
}


/**
 * `handshakeDone` is called once the request is read (the listener's handshake deadline, which
 * covers greeting, login and request together, stops there).
 */
export function handleSocks5(socket: Socket, first: Buffer, ctx: InboundContext, handshakeDone: () => void = noop): void {
  const session = new Socks5Session(socket, first, ctx, handshakeDone);
  (socket as InSession)[kSession] = session;
  socket.on('data', sessionData);
  socket.on('end', sessionEnd);
  session.guardedStep();
}
