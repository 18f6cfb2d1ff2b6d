// A raw SOCKS5 client for tests: writes exact bytes, reads exact replies.
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';

/** Read exactly n bytes (or fewer if the stream ends first), keeping the rest unshifted. */
export async function readN(s: Socket, n: number, timeoutMs = 5000): Promise<Buffer> {
  let buf = Buffer.alloc(0);
  const deadline = AbortSignal.timeout(timeoutMs);
  while (buf.length < n) {
    const chunk = s.read() as Buffer | null;
    if (chunk) {
      buf = Buffer.concat([buf, chunk]);
      continue;
    }
    if (s.readableEnded || s.destroyed) break;
    await Promise.race([once(s, 'readable', { signal: deadline }), once(s, 'end', { signal: deadline })]);
  }
  if (buf.length > n) {
    s.unshift(buf.subarray(n));
    buf = buf.subarray(0, n);
  }
  return buf;
}

/** Read until the peer ends; returns all bytes. */
export async function readAll(s: Socket, timeoutMs = 10_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  await Promise.race([
    once(s, 'end', { signal: AbortSignal.timeout(timeoutMs) }),
    once(s, 'close', { signal: AbortSignal.timeout(timeoutMs) }),
  ]);
  return Buffer.concat(chunks);
}

export function addrBytes(host: string): Buffer {
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(host);
  if (v4) return Buffer.from([0x01, ...v4.slice(1).map(Number)]);
  if (host.includes(':')) {
    const [head, tail] = host.split('::');
    const h = head ? head.split(':') : [];
    const tl = tail !== undefined ? (tail ? tail.split(':') : []) : [];
    const groups = tail !== undefined ? [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl] : h;
    const b = Buffer.alloc(17);
    b[0] = 0x04;
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), 1 + i * 2));
    return b;
  }
  const name = Buffer.from(host);
  return Buffer.concat([Buffer.from([0x03, name.length]), name]);
}

export function requestBytes(cmd: number, host: string, port: number): Buffer {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([Buffer.from([0x05, cmd, 0x00]), addrBytes(host), p]);
}

export interface SocksReply {
  ver: number;
  rep: number;
  atyp: number;
  bound: string;
  port: number;
}

/** Read one SOCKS5 reply. */
export async function readReply(s: Socket): Promise<SocksReply> {
  const head = await readN(s, 4);
  if (head.length < 4) throw new Error(`short reply: ${head.toString('hex')}`);
  const [ver, rep, , atyp] = head;
  let bound = '';
  if (atyp === 0x01) bound = [...(await readN(s, 4))].join('.');
  else if (atyp === 0x04) {
    const b = await readN(s, 16);
    const g: string[] = [];
    for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
    bound = g.join(':');
  } else if (atyp === 0x03) {
    const n = (await readN(s, 1))[0];
    bound = (await readN(s, n)).toString();
  }
  const port = (await readN(s, 2)).readUInt16BE(0);
  return { ver, rep, atyp, bound, port };
}

/** Connect to the proxy, do the no-auth greeting, send the request; returns socket + reply. */
export async function socksRequest(
  proxyPort: number,
  cmd: number,
  host: string,
  port: number,
  extra?: Buffer,
  proxyHost = '127.0.0.1',
): Promise<{ socket: Socket; reply: SocksReply }> {
  const socket = connect({ host: proxyHost, port: proxyPort, allowHalfOpen: true });
  await once(socket, 'connect');
  // greeting and request in one write (pipelined), plus any extra payload
  socket.write(Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), requestBytes(cmd, host, port), extra ?? Buffer.alloc(0)]));
  const method = await readN(socket, 2);
  if (method[0] !== 0x05 || method[1] !== 0x00) throw new Error(`method reply ${method.toString('hex')}`);
  const reply = await readReply(socket);
  return { socket, reply };
}
