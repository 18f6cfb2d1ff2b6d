// The floor for a Node relay: the least a SOCKS5 CONNECT proxy in Node can do. No auth, no
// policy, no pinning, no logging, no counters: parse the request, dial, then two
// `stream.pipeline`s. Run as its own process like the other proxies:
//   node dist/bench/floor-relay.js <port>      (prints "ready" on stdout)
// holdfast's relay should cost little more than this; the gap to Dante is Node's own.
import { connect, createServer, type Socket } from 'node:net';
import { pipeline } from 'node:stream';
import { pathToFileURL } from 'node:url';

function reply(sock: Socket, code: number): void {
  sock.end(Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]));
}

function onClient(client: Socket): void {
  client.on('error', () => client.destroy());
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
    const up = connect({ host, port });
    up.once('error', () => reply(client, 5));
    up.once('connect', () => {
      up.removeAllListeners('error');
      client.removeAllListeners('error');
      client.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, (up.localPort ?? 0) >> 8, (up.localPort ?? 0) & 255]));
      if (rest.length > 0) up.write(rest);
      pipeline(client, up, () => undefined);
      pipeline(up, client, () => undefined);
    });
  };
  client.on('data', onData);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = Number(process.argv[2]);
  const server = createServer(onClient);
  server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
}
