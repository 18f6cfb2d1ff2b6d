// The common HTTP CONNECT request read without Node's HTTP server: a request line and a few plain
// header lines that arrived whole in the client's first chunk. It is what browsers, curl and
// language runtimes send before TLS, and taking it here spares each tunnel the server's parser,
// its IncomingMessage and its socket bookkeeping (a tenth of a short tunnel's time, measured in
// bench/README.md). It is deliberately narrow: anything it does not fully understand (a head
// split across reads, a bare LF, a folded line, a control byte, a body header, a repeated
// Proxy-Authorization, a head over the size limit) is left to Node's parser, which gives the
// proper answer, so this reader never has to refuse anything itself.

/** What a CONNECT head says that holdfast uses. */
export interface ConnectHead {
  /** the request-target as sent (authority-form, checked later by parseAuthority) */
  readonly target: string;
  /** the Proxy-Authorization value (trimmed), if there was one */
  readonly proxyAuthorization: string | undefined;
  /** the head's length in bytes, its blank line included: what follows is the tunnel's */
  readonly length: number;
}

const CONNECT_SP = Buffer.from('CONNECT ', 'latin1');
const END = Buffer.from('\r\n\r\n', 'latin1');
/** more header lines than any client sends before a tunnel: leave the rest to Node */
const MAX_LINES = 64;
/** `CONNECT <authority> HTTP/1.x`: the authority's characters (a name, IPv4, [IPv6], port) */
const REQUEST_LINE = /^CONNECT ([A-Za-z0-9._~\-:[\]%]{1,300}) HTTP\/1\.[01]$/;
/** `name: value` with a token name (RFC 9110 5.1, 5.5); the value's spaces are trimmed */
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
/** only tab and visible ASCII and space in a line (no CR, LF, NUL, DEL, or bytes over 0x7e) */
const PLAIN = /^[\t\x20-\x7e]*$/;

/**
 * The CONNECT head at the start of `chunk` when it is whole and plain, else undefined (then
 * Node's HTTP server reads it). `maxBytes`: the head size limit (http.maxHeaderBytes).
 */
export function parseConnectHead(chunk: Buffer, maxBytes: number): ConnectHead | undefined {
  if (chunk.length < CONNECT_SP.length + END.length || chunk.compare(CONNECT_SP, 0, CONNECT_SP.length, 0, CONNECT_SP.length) !== 0) {
    return undefined;
  }
  const end = chunk.indexOf(END);
  if (end < 0) return undefined;
  const length = end + END.length;
  if (length > maxBytes) return undefined;
  const lines = chunk.toString('latin1', 0, end).split('\r\n');
  if (lines.length > MAX_LINES) return undefined;
  const request = REQUEST_LINE.exec(lines[0]);
  if (!request) return undefined;
  let proxyAuthorization: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (!PLAIN.test(line)) return undefined;
    const h = HEADER_LINE.exec(line);
    if (!h) return undefined; // an obs-fold line begins with a space; an empty name; no colon
    const name = h[1].toLowerCase();
    if (name === 'proxy-authorization') {
      if (proxyAuthorization !== undefined) return undefined;
      proxyAuthorization = h[2];
    } else if (name === 'content-length' || name === 'transfer-encoding') {
      return undefined;
    }
  }
  return { target: request[1], proxyAuthorization, length };
}
