// The HTTP inbound's words: hop-by-hop header filters, the CONNECT target parser, status texts,
// the plain-text answers holdfast writes itself, and the Proxy-Authorization check.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Destination } from '../contracts.js';
import { hfCodeOf } from '../errors.js';
import type { InboundContext } from './context.js';

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

/**
 * Flat [name, value, ...] without hop-by-hop headers and those the Connection header names; with
 * `dropHost`, without Host too (the forwarder sets it from the URL). One pass over the names.
 */
export function forwardableHeaders(raw: readonly string[], dropHost = false): string[] {
  const n = raw.length;
  const lower: string[] = new Array(n >> 1);
  let named: Set<string> | undefined;
  for (let i = 0; i < n; i += 2) {
    const k = (lower[i >> 1] = raw[i].toLowerCase());
    if (k === 'connection' || k === 'proxy-connection') {
      for (const t of raw[i + 1].split(',')) {
        const name = t.trim().toLowerCase();
        if (name) (named ??= new Set()).add(name);
      }
    }
  }
  const out: string[] = [];
  for (let i = 0; i < n; i += 2) {
    const k = lower[i >> 1];
    if (hopByHop.has(k) || (dropHost && k === 'host') || named?.has(k)) continue;
    out.push(raw[i], raw[i + 1]);
  }
  return out;
}

export function responseHeaders(h: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
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

/** How many Host headers a request has (flat [name, value, ...]). */
export function countHost(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i].length === 4 && raw[i].toLowerCase() === 'host') n++;
  return n;
}

export function hostOf(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
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

export function plainReply(status: number, text: string, body: string): string {
  return (
    `HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

export const statusText: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  407: 'Proxy Authentication Required',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

export const clientErrorText: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
};

export function errorBody(err: unknown): string {
  return `holdfast: ${hfCodeOf(err)}: ${(err as Error).message}\n`;
}

export function sendError(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Proxy-Authorization, when auth is on. */
export function authorized(ctx: InboundContext, req: IncomingMessage): boolean {
  return authorizedBy(ctx, req.headers['proxy-authorization']);
}
/** `authorized`, given the Proxy-Authorization value itself */
export function authorizedBy(ctx: InboundContext, proxyAuthorization: string | undefined): boolean {
  if (!ctx.auth.required) return true;
  if (ctx.auth.checkBasic(proxyAuthorization)) return true;
  ctx.counters.authFailures++;
  return false;
}
export const authRequired =
  'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="holdfast", charset="UTF-8"\r\n' +
  'Content-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nConnection: close\r\n\r\nholdfast: proxy authentication needed\n';
