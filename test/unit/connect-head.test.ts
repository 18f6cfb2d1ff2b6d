// parseConnectHead (src/inbound/connect-head.ts): the CONNECT heads it reads itself, the ones it
// leaves to Node's parser, and a differential check against Node's HTTP server: whatever it
// accepts, Node's parser (as a real server on loopback reads it) accepts too, with the same
// request-target, Proxy-Authorization and tunnel bytes.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import { parseConnectHead } from '../../src/inbound/connect-head.js';

const MAX = 16 * 1024;
const b = (s: string) => Buffer.from(s, 'latin1');

test('a whole, plain CONNECT head is read: target, Proxy-Authorization, length; what follows is the tunnel\'s', () => {
  const head = 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization:  Basic dTpw \t\r\nUser-Agent: curl/8.5.0\r\n\r\n';
  const h = parseConnectHead(b(head + '\x16\x03\x01'), MAX);
  assert.deepEqual(h, { target: 'example.com:443', proxyAuthorization: 'Basic dTpw', length: head.length });
  const v6 = 'CONNECT [2001:db8::1]:8443 HTTP/1.0\r\n\r\n';
  assert.deepEqual(parseConnectHead(b(v6), MAX), { target: '[2001:db8::1]:8443', proxyAuthorization: undefined, length: v6.length });
  // an empty header value is a header like any other
  assert.equal(parseConnectHead(b('CONNECT a:1 HTTP/1.1\r\nX-Empty:\r\n\r\n'), MAX)?.target, 'a:1');
  // a target that is no authority is still read: handleConnect answers 400 for it, as for Node's
  assert.equal(parseConnectHead(b('CONNECT nope HTTP/1.1\r\n\r\n'), MAX)?.target, 'nope');
});

test('anything unusual is left to Node\'s parser (undefined)', () => {
  const cases: Array<[string, string]> = [
    ['not CONNECT', 'GET / HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['lower-case method', 'connect a:1 HTTP/1.1\r\n\r\n'],
    ['head not whole yet', 'CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n'],
    ['bare LF', 'CONNECT a:1 HTTP/1.1\nHost: a:1\r\n\r\n'],
    ['bare LF in a header', 'CONNECT a:1 HTTP/1.1\r\nHost: a\n:1\r\n\r\n'],
    ['bare CR', 'CONNECT a:1 HTTP/1.1\r\nHost: a\r:1\r\n\r\n'],
    ['folded line', 'CONNECT a:1 HTTP/1.1\r\nX-A: 1\r\n  more\r\n\r\n'],
    ['space before the colon', 'CONNECT a:1 HTTP/1.1\r\nHost : a\r\n\r\n'],
    ['no colon', 'CONNECT a:1 HTTP/1.1\r\nHost\r\n\r\n'],
    ['empty name', 'CONNECT a:1 HTTP/1.1\r\n: a\r\n\r\n'],
    ['NUL in a value', 'CONNECT a:1 HTTP/1.1\r\nX: a\0b\r\n\r\n'],
    ['DEL in a value', 'CONNECT a:1 HTTP/1.1\r\nX: a\x7fb\r\n\r\n'],
    ['obs-text in a value', 'CONNECT a:1 HTTP/1.1\r\nX: caf\xe9\r\n\r\n'],
    ['two Proxy-Authorization', 'CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic a\r\nproxy-authorization: Basic b\r\n\r\n'],
    ['Content-Length', 'CONNECT a:1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello'],
    ['Transfer-Encoding', 'CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['HTTP/2.0', 'CONNECT a:1 HTTP/2.0\r\n\r\n'],
    ['two spaces', 'CONNECT  a:1 HTTP/1.1\r\n\r\n'],
    ['a space in the target', 'CONNECT a :1 HTTP/1.1\r\n\r\n'],
    ['a slash in the target', 'CONNECT a:1/x HTTP/1.1\r\n\r\n'],
    ['userinfo in the target', 'CONNECT u@a:1 HTTP/1.1\r\n\r\n'],
    ['no version', 'CONNECT a:1\r\n\r\n'],
    ['many header lines', `CONNECT a:1 HTTP/1.1\r\n${'X: 1\r\n'.repeat(80)}\r\n`],
  ];
  for (const [what, head] of cases) assert.equal(parseConnectHead(b(head), MAX), undefined, what);
  // over the size limit (the blank line counts): Node answers 431
  const big = `CONNECT a:1 HTTP/1.1\r\nX: ${'y'.repeat(100)}\r\n\r\n`;
  assert.equal(parseConnectHead(b(big), big.length - 1), undefined, 'one byte over');
  assert.equal(parseConnectHead(b(big), big.length)?.length, big.length, 'exactly at the limit');
});

/** xorshift32: the same cases on every run */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

const PIECES = ['\r', '\n', '\r\n', ' ', '\t', ':', '\0', '\x7f', '\xff', 'a', 'Z', '-', '[', ']', '%', '/', '@', '1', 'Proxy-Authorization: Basic x', 'Content-Length: 0', 'Host: h'];

/** A CONNECT head, then a few random edits (insert, delete, duplicate a line). */
function mutated(rnd: () => number): string {
  const lines = [
    `CONNECT ${rnd() < 0.5 ? 'host.test' : '[::1]'}:${1 + Math.floor(rnd() * 65535)} HTTP/1.${rnd() < 0.8 ? 1 : 0}`,
    'Host: host.test',
    ...(rnd() < 0.5 ? ['Proxy-Authorization: Basic dTpw'] : []),
    'User-Agent: t',
  ];
  if (rnd() < 0.2) lines.push(lines[1 + Math.floor(rnd() * (lines.length - 1))]);
  let s = `${lines.join('\r\n')}\r\n\r\n`;
  const edits = Math.floor(rnd() * 3);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(rnd() * s.length);
    if (rnd() < 0.7) s = s.slice(0, at) + PIECES[Math.floor(rnd() * PIECES.length)] + s.slice(at);
    else s = s.slice(0, at) + s.slice(at + 1);
  }
  return s + (rnd() < 0.5 ? 'early' : '');
}

interface NodeRead {
  url: string;
  auth: string | undefined;
  head: number;
}

test("differential: every head parseConnectHead reads, Node's HTTP server reads the same way", async (t) => {
  const server = createServer();
  const seen: Array<(r: NodeRead | 'error') => void> = [];
  server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen.shift()?.({ url: req.url ?? '', auth: req.headers['proxy-authorization'], head: head.length });
    socket.destroy();
  });
  server.on('request', (_req, res) => {
    seen.shift()?.('error');
    res.destroy();
  });
  server.on('clientError', (_err, socket) => {
    seen.shift()?.('error');
    socket.destroy();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;

  const nodeReads = async (bytes: Buffer): Promise<NodeRead | 'error'> => {
    const answer = new Promise<NodeRead | 'error'>((resolve) => seen.push(resolve));
    const c = connect(port, '127.0.0.1');
    c.on('error', () => {});
    c.end(bytes);
    const r = await Promise.race([answer, new Promise<'timeout'>((r) => setTimeout(r, 5000, 'timeout'))]);
    c.destroy();
    assert.notEqual(r, 'timeout', `no answer from Node for ${JSON.stringify(bytes.toString('latin1'))}`);
    return r as NodeRead | 'error';
  };

  const rnd = prng(20261206);
  let read = 0;
  let left = 0;
  for (let i = 0; i < 300; i++) {
    const text = mutated(rnd);
    const bytes = b(text);
    const fast = parseConnectHead(bytes, MAX);
    if (!fast) {
      left++;
      continue;
    }
    read++;
    const node = await nodeReads(bytes);
    assert.notEqual(node, 'error', `Node refuses what parseConnectHead read: ${JSON.stringify(text)}`);
    const n = node as NodeRead;
    assert.equal(n.url, fast.target, JSON.stringify(text));
    assert.equal(n.auth, fast.proxyAuthorization, JSON.stringify(text));
    assert.equal(n.head, bytes.length - fast.length, JSON.stringify(text));
  }
  // both sides of the reader were exercised
  assert.ok(read >= 50, `${read} heads read`);
  assert.ok(left >= 50, `${left} heads left to Node`);
});
