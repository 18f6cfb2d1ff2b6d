// A deterministic byte stream for transfers checked end to end: byte i is pattern[(i + seed) % P],
// P prime, so chunks never line up with the stream's period and a lost, doubled or reordered
// chunk changes the hash.
import { createHash } from 'node:crypto';

export const MiB = 1 << 20;

const P = 1_048_573;
const pattern = Buffer.alloc(P);
for (let i = 0, x = 0x9e3779b9; i < P; i++) {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  pattern[i] = x & 0xff;
}

/** Bytes pos..pos+len of stream `seed`. */
export function slice(pos: number, len: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(len);
  let o = 0;
  while (o < len) {
    const at = (pos + o + seed) % P;
    o += pattern.copy(out, o, at, Math.min(P, at + (len - o)));
  }
  return out;
}

/** SHA-256 (hex) of bytes from..total of stream `seed`. */
export function expectedHash(total: number, seed: number, from = 0): string {
  const h = createHash('sha256');
  for (let pos = from; pos < total; pos += MiB) h.update(slice(pos, Math.min(MiB, total - pos), seed));
  return h.digest('hex');
}
