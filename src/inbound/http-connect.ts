// HTTP CONNECT: check the request, then open a tunnel like SOCKS5 CONNECT does (tunnel.ts), with
// HTTP's answers: "200 Connection established", or the error table's status with a plain body.
import type { Socket } from 'node:net';
import { toHttpStatus } from '../errors.js';
import { peerOf, type InboundContext } from './context.js';
import { ignoreError } from './listen.js';
import type { HttpInboundOptions } from './http.js';
import { authRequired, authorizedBy, errorBody, parseAuthority, plainReply, statusText } from './http-text.js';
import { openTunnel, type TunnelProtocol } from './tunnel.js';

/** One Buffer for every tunnel: no string to encode per flow */
const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n', 'latin1');

const connectProtocol: TunnelProtocol = {
  success: () => ESTABLISHED,
  failure: (err) => {
    const status = toHttpStatus(err);
    return plainReply(status, statusText[status] ?? 'Error', errorBody(err));
  },
};

/**
 * Node hands the socket over unread: after the answer nothing reads it, so a client's FIN would
 * never be seen; destroy it once the answer is out.
 */
function refuse(socket: Socket, answer: string): void {
  socket.end(answer);
  socket.destroySoon();
}

/**
 * A CONNECT request: its request-target and Proxy-Authorization, from Node's parser or from
 * parseConnectHead. The socket comes unread, with `head` the bytes after the request's head.
 */
export function handleConnect(
  ctx: InboundContext,
  o: HttpInboundOptions,
  target: string,
  proxyAuthorization: string | undefined,
  socket: Socket,
  head: Buffer,
): void {
  socket.on('error', ignoreError); // ends in 'close'
  if (!authorizedBy(ctx, proxyAuthorization)) return refuse(socket, authRequired);
  const dst = parseAuthority(target);
  if (!dst) return refuse(socket, plainReply(400, 'Bad Request', 'holdfast: CONNECT needs host:port\n'));
  if (o.isSelf(dst.host, dst.port)) {
    ctx.counters.loopRefusals++;
    return refuse(socket, plainReply(403, 'Forbidden', 'holdfast: refusing to CONNECT to myself\n'));
  }
  socket.pause();
  openTunnel(ctx, 'http-connect', socket, peerOf(socket), dst, head, connectProtocol);
}
