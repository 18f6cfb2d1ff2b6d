// When may the forwarder continue a response on a new connection, what does it ask, and what
// answer may be spliced in: only the missing bytes of the same representation (RFC 9110 13.1.5
// If-Range, 14.4 Content-Range), never a mix of two.

/** Response headers as undici hands them (lower-case names). */
export type Headers = Record<string, string | string[] | undefined>;

/** What the client is getting: bytes start..end (inclusive) of a representation of `total` bytes. */
export interface Resumable {
  readonly start: number;
  readonly end: number;
  readonly total: number;
  /** body bytes the client gets (end - start + 1) */
  readonly length: number;
  /** the strong validator: a strong ETag, else Last-Modified */
  readonly etag?: string;
  readonly lastModified?: string;
}

const one = (h: Headers, name: string): string | undefined => {
  const v = h[name];
  return typeof v === 'string' ? v.trim() : undefined;
};

const digits = /^\d{1,15}$/;
const strongEtag = /^"[\x21\x23-\x7e\x80-\xff]*"$/;
const contentRange = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/;

function rangeOf(h: Headers): { start: number; end: number; total: number } | undefined {
  const m = contentRange.exec(one(h, 'content-range') ?? '');
  if (!m) return undefined;
  const [start, end, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return start <= end && end < total ? { start, end, total } : undefined;
}

/**
 * The response (its status and headers) can be resumed: a 200 with a known length and
 * `Accept-Ranges: bytes`, or a 206 of one range with its total known, each with a strong
 * validator. Else undefined (a failure cuts the client as before).
 */
export function resumableOf(status: number, h: Headers): Resumable | undefined {
  if (h['transfer-encoding'] !== undefined) return undefined;
  const etag = one(h, 'etag');
  const lastModified = one(h, 'last-modified');
  let validator: { etag: string } | { lastModified: string };
  if (etag !== undefined && strongEtag.test(etag)) validator = { etag };
  else if (etag === undefined && lastModified !== undefined && !Number.isNaN(Date.parse(lastModified))) validator = { lastModified };
  else return undefined; // a weak ETag says the bytes may differ: Last-Modified would not say more
  const cl = one(h, 'content-length');
  if (cl === undefined || !digits.test(cl)) return undefined;
  const length = Number(cl);
  if (status === 200) {
    const ranges = (one(h, 'accept-ranges') ?? '').toLowerCase().split(',').map((s) => s.trim());
    if (!ranges.includes('bytes') || length === 0) return undefined;
    return { start: 0, end: length - 1, total: length, length, ...validator };
  }
  if (status === 206) {
    const r = rangeOf(h);
    if (!r || r.end - r.start + 1 !== length) return undefined;
    return { ...r, length, ...validator };
  }
  return undefined;
}

/** Conditions of the first request that the resumed one must not carry (If-Range decides). */
const conditional = new Set(['range', 'if-range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since']);

/** The request's headers (flat name, value list) for the bytes after the first `sent`. */
export function resumeHeaders(headers: readonly string[], r: Resumable, sent: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (!conditional.has(headers[i].toLowerCase())) out.push(headers[i], headers[i + 1]);
  }
  out.push('range', `bytes=${r.start + sent}-${r.end}`, 'if-range', (r.etag ?? r.lastModified)!);
  return out;
}

/** Why this answer to the resumed request may not be spliced in, or undefined if it may. */
export function spliceRefusal(status: number, h: Headers, r: Resumable, sent: number): string | undefined {
  if (status !== 206) return `status ${status}, not 206`;
  const got = rangeOf(h);
  const start = r.start + sent;
  if (!got || got.start !== start || got.end !== r.end || got.total !== r.total) {
    return `content-range ${one(h, 'content-range') ?? '(none)'}, not bytes ${start}-${r.end}/${r.total}`;
  }
  const cl = one(h, 'content-length');
  if (cl !== undefined && cl !== String(r.end - start + 1)) return `content-length ${cl}, not ${r.end - start + 1}`;
  if (h['transfer-encoding'] !== undefined) return 'a transfer coding';
  if (r.etag !== undefined) {
    const etag = one(h, 'etag');
    if (etag !== r.etag) return `etag ${etag ?? '(none)'}, not ${r.etag}`;
  } else if (one(h, 'last-modified') !== r.lastModified) {
    return `last-modified ${one(h, 'last-modified') ?? '(none)'}, not ${r.lastModified}`;
  }
  return undefined;
}
