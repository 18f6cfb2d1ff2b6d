// Requests addressed to holdfast itself (/status, /metrics, /proxy.pac and friends): who may
// read them, and which handler answers.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InboundContext } from './context.js';
import { hostIsOurs } from './host.js';
import type { HttpInboundOptions } from './http.js';
import { isLoopbackIp } from '../net/addr.js';
import { sendError } from './http-text.js';

export type LocalHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Answer a request for holdfast's own page `pathAndQuery`. */
export function serveLocal(
  ctx: InboundContext,
  o: HttpInboundOptions,
  req: IncomingMessage,
  res: ServerResponse,
  pathAndQuery: string,
): void {
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
