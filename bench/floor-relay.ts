// The floor for a Node relay: the least a SOCKS5 CONNECT or HTTP CONNECT proxy in Node can do.
// No auth, no policy, no pinning, no logging, no counters, no timeouts: parse the request, dial
// with net.connect, answer, then relay with four listeners a side ('data' with backpressure,
// 'end', 'error', 'close'). Run as its own process like the other proxies:
//   node dist/bench/floor-relay.js <port>      (prints "ready" on stdout)
// What holdfast costs above this is its own JavaScript; what this costs above a C proxy is Node's.
import { connect, createServer, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

/** Relay both ways: a write that fills the buffer pauses the reader until 'drain'. */
function relay(a: Socket, b: Socket): void {
  const oneWay = (from: Socket, to: Socket): void => {
    from.on('data', (d: Buffer) => {
      if (!to.write(d)) from.pause();
    });
    to.on('drain', () => from.resume());
    from.on('end', () => to.end());
    from.on('error', () => to.destroy());
    from.on('close', () => to.destroy());
  };
  oneWay(a, b);
  oneWay(b, a);
  a.resume();
  b.resume();
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n');
const BAD_GATEWAY = Buffer.from('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');

/** HTTP CONNECT: the head whole (at most 16 KiB), "CONNECT host:port HTTP/1.x", then dial. */
function onConnectHead(client: Socket, first: Buffer): void {
  let buf = first;
  const onData = (chunk: Buffer): void => {
    buf = Buffer.concat([buf, chunk]);
    check();
  };
  const check = (): void => {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buf.length > 16384) client.destroy();
      return;
    }
    client.off('data', onData);
    client.pause();
    const m = /^CONNECT (\[[0-9a-fA-F:.]+\]|[^\s:]+):(\d+) HTTP\/1\.[01]\r\n/.exec(buf.toString('latin1', 0, end + 2));
    if (m === null) return void client.end(BAD_GATEWAY);
    const rest = buf.subarray(end + 4);
    const up = connect({ host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), allowHalfOpen: true, noDelay: true });
    up.once('error', () => client.end(BAD_GATEWAY));
    up.once('connect', () => {
      up.removeAllListeners('error');
      client.write(ESTABLISHED);
      if (rest.length > 0) up.write(rest);
      relay(client, up);
    });
  };
  client.on('data', onData);
  check();
}

function reply(sock: Socket, code: number): void {
  sock.end(Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]));
}

function onClient(client: Socket): void {
  client.on('error', () => client.destroy());
  client.once('data', (first: Buffer) => {
    if (first[0] === 5) onSocks5(client, first);
    else onConnectHead(client, first);
  });
}

function onSocks5(client: Socket, first: Buffer): void {
  let buf: Buffer = Buffer.alloc(0);
  let stage: 'greeting' | 'request' = 'greeting';
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    if (stage === 'greeting') {
      if (buf.length < 2 || buf.length < 2 + buf[1]) return;
      if (buf[0] !== 5) return void client.destroy();
      buf = buf.subarray(2 + buf[1]);
      client.write(Buffer.from([5, 0]));
      stage = 'request';
      if (buf.length === 0) return;
    }
    if (buf.length < 5) return;
    let host: string;
    let end: number;
    if (buf[3] === 1) {
      end = 10;
      if (buf.length < end) return;
      host = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
    } else if (buf[3] === 3) {
      end = 7 + buf[4];
      if (buf.length < end) return;
      host = buf.toString('latin1', 5, 5 + buf[4]);
    } else if (buf[3] === 4) {
      end = 22;
      if (buf.length < end) return;
      const parts: string[] = [];
      for (let i = 0; i < 8; i++) parts.push(buf.readUInt16BE(4 + 2 * i).toString(16));
      host = parts.join(':');
    } else return reply(client, 8);
    if (buf[1] !== 1) return reply(client, 7);
    const port = buf.readUInt16BE(end - 2);
    const rest = buf.subarray(end);
    client.off('data', onData);
    client.pause();
    const up = connect({ host, port, allowHalfOpen: true, noDelay: true });
    up.once('error', () => reply(client, 5));
    up.once('connect', () => {
      up.removeAllListeners('error');
      client.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, (up.localPort ?? 0) >> 8, (up.localPort ?? 0) & 255]));
      if (rest.length > 0) up.write(rest);
      relay(client, up);
    });
  };
  client.on('data', onData);
  onData(first);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = Number(process.argv[2]);
  const server = createServer({ allowHalfOpen: true, noDelay: true }, onClient);
  server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
}
