// SOCKS5 BIND through a real holdfast on loopback, with the `socks` client (bind) and raw sockets:
// a peer connects back to the bound address, bytes flow both ways, a wrong peer is refused and the
// right one still gets through, the accept timeout answers 0x06, and the listener never outlives
// its BIND.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { SocksClient } from 'socks';
import { EgressLostError } from '../../src/errors.js';
import { flowsDrained, startProxy, type TestProxy } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { readAll, readReply, socksRequest } from '../helpers/socks-client.js';

// a name only a DNS server could answer: inside the loopback-only namespace only
const skipOutsideSandbox = sandboxSkip();

interface Endpoint {
  host: string;
  port: number;
}

/** A BIND with the `socks` client: resolves at the first reply; `established` at the second. */
function bind(
  t: TestContext,
  p: TestProxy,
  expected: string,
): Promise<{ bound: Endpoint; control: Socket; established: Promise<{ peer: Endpoint; socket: Socket }> }> {
  const client = new SocksClient({
    proxy: { host: p.host, port: p.port, type: 5 },
    command: 'bind',
    destination: { host: expected, port: 0 },
    timeout: 10_000,
  });
  const established = new Promise<{ peer: Endpoint; socket: Socket }>((resolve, reject) => {
    client.once('established', (info: unknown) => {
      const i = info as { remoteHost: Endpoint; socket: Socket };
      resolve({ peer: i.remoteHost, socket: i.socket });
    });
    client.once('error', reject);
  });
  established.catch(() => {});
  return new Promise((resolve, reject) => {
    client.once('bound', (raw: unknown) => {
      const info = raw as { remoteHost: Endpoint; socket: Socket };
      t.after(() => info.socket.destroy());
      info.socket.on('error', () => {});
      resolve({ bound: info.remoteHost, control: info.socket, established });
    });
    client.once('error', reject);
    client.connect();
  });
}

/** Connect a peer from `from` to the bound endpoint; destroyed by t.after. */
async function peer(t: TestContext, to: Endpoint, from: string): Promise<Socket> {
  const s = connect({ host: to.host, port: to.port, localAddress: from, allowHalfOpen: true });
  t.after(() => s.destroy());
  s.on('error', () => {});
  await once(s, 'connect', { signal: AbortSignal.timeout(5000) });
  return s;
}

/** true if nothing listens at `to` any more (ECONNREFUSED). */
async function refuses(to: Endpoint): Promise<boolean> {
  const s = connect(to.port, to.host);
  try {
    await once(s, 'connect', { signal: AbortSignal.timeout(5000) });
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  } finally {
    s.destroy();
  }
}

test('BIND: the expected peer connects back to the bound address; bytes flow both ways; half-close works', async (t) => {
  const p = await startProxy(t);
  const b = await bind(t, p, '127.0.0.2');
  assert.equal(b.bound.host, '127.0.0.1', 'bound on the address of the egress toward the peer');
  assert.ok(b.bound.port > 0);

  const st = p.hf.status();
  const f = (st.flows as unknown as Array<{ kind: string; egress: string; ip: string; dst: string }>).find((x) => x.kind === 'socks5-bind');
  assert.ok(f, JSON.stringify(st.flows));
  assert.equal(f.egress, 'lo');
  assert.equal(f.ip, '127.0.0.2');

  const pe = await peer(t, b.bound, '127.0.0.2');
  const { peer: seenPeer, socket: client } = await b.established;
  assert.equal(seenPeer.host, '127.0.0.2', 'the second reply names the peer');
  assert.equal(seenPeer.port, pe.localPort);

  client.write('hello from the client');
  pe.write('hello from the peer');
  const fromClient = once(pe, 'data', { signal: AbortSignal.timeout(5000) });
  const fromPeer = once(client, 'data', { signal: AbortSignal.timeout(5000) });
  assert.equal(String((await fromClient)[0]), 'hello from the client');
  assert.equal(String((await fromPeer)[0]), 'hello from the peer');

  // the peer ends; the client gets the last bytes and its end (the socks client then ends too)
  const clientGot = readAll(client);
  const peerEnded = once(pe, 'end', { signal: AbortSignal.timeout(5000) });
  pe.end(' bye');
  assert.equal(String(await clientGot), ' bye');
  client.end();
  await peerEnded;

  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-bind');
  assert.equal(close.reason, 'done');
  assert.equal(close.bytesUp, 'hello from the client'.length);
  assert.equal(close.bytesDown, 'hello from the peer'.length + ' bye'.length);
  await flowsDrained(p.hf);
  assert.ok(await refuses(b.bound), 'the listener took one connection and closed');
});

test('BIND: half-close from the client; the peer still answers after it', async (t) => {
  const p = await startProxy(t);
  const { socket, reply } = await socksRequest(p.port, 0x02, '127.0.0.2', 0);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  const pe = await peer(t, { host: reply.bound, port: reply.port }, '127.0.0.2');
  const second = await readReply(socket);
  assert.equal(second.rep, 0);
  assert.equal(second.bound, '127.0.0.2');
  const peerGot = readAll(pe);
  socket.end('question, then FIN');
  assert.equal(String(await peerGot), 'question, then FIN');
  const clientGot = readAll(socket);
  pe.end('answer after the FIN');
  assert.equal(String(await clientGot), 'answer after the FIN');
  await flowsDrained(p.hf);
});

test('BIND: a wrong peer is refused (reset) and counted; the expected one still gets through', async (t) => {
  const p = await startProxy(t);
  const b = await bind(t, p, '127.0.0.2');
  // the wrong peer's connection is accepted by the kernel, then reset by holdfast: the reset may
  // even beat the client's own view of the connect
  const wrong = connect({ host: b.bound.host, port: b.bound.port, localAddress: '127.0.0.3' });
  t.after(() => wrong.destroy());
  const wrongData: Buffer[] = [];
  wrong.on('data', (d: Buffer) => wrongData.push(d));
  const [err] = (await once(wrong, 'error', { signal: AbortSignal.timeout(5000) })) as [NodeJS.ErrnoException];
  assert.equal(err.code, 'ECONNRESET', 'the wrong peer was reset');
  assert.equal(wrongData.length, 0);
  assert.equal((p.hf.status() as unknown as { socks5: { bind: { peersRefused: number } } }).socks5.bind.peersRefused, 1);
  assert.equal(p.hf.flows.size, 1, 'the BIND still waits');

  const right = await peer(t, b.bound, '127.0.0.2');
  const { peer: seen, socket: client } = await b.established;
  assert.equal(seen.host, '127.0.0.2');
  right.end('the right one');
  assert.equal(String(await readAll(client)), 'the right one', 'no byte of the wrong peer reached the client');
});

test('BIND to an IPv6 peer over an IPv6 listener', async (t) => {
  const p = await startProxy(t, {}, ['[::1]:0']);
  const { socket, reply } = await socksRequest(p.port, 0x02, '::1', 0, undefined, '::1');
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  assert.equal(reply.atyp, 0x04);
  const pe = await peer(t, { host: '::1', port: reply.port }, '::1');
  const second = await readReply(socket);
  assert.equal(second.rep, 0);
  assert.equal(second.atyp, 0x04);
  assert.equal(second.port, pe.localPort);
  pe.end('v6');
  socket.end();
  assert.equal(String(await readAll(socket)), 'v6');
});

test('BIND: no expected peer within bind.acceptTimeout gives a second reply 0x06 and closes the listener', async (t) => {
  const p = await startProxy(t, { bind: { acceptTimeout: 300 } });
  const t0 = Date.now();
  const { socket, reply } = await socksRequest(p.port, 0x02, '127.0.0.2', 0);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  const second = await readReply(socket);
  const waitedMs = Date.now() - t0;
  assert.equal(second.rep, 0x06);
  assert.ok(waitedMs >= 290, `the second reply came after ${waitedMs} ms`);
  await once(socket, 'end', { signal: AbortSignal.timeout(5000) });
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-bind');
  assert.equal(close.reason, 'timeout');
  assert.equal(close.code, 'HF_DIAL_TIMEOUT');
  assert.ok(await refuses({ host: reply.bound, port: reply.port }));
  assert.equal((p.hf.status() as unknown as { socks5: { bind: { timeouts: number } } }).socks5.bind.timeouts, 1);
});

test('BIND: a client that leaves while waiting takes the listener with it', async (t) => {
  const p = await startProxy(t);
  const { socket, reply } = await socksRequest(p.port, 0x02, '127.0.0.2', 0);
  assert.equal(reply.rep, 0);
  socket.end();
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-bind');
  assert.equal(close.reason, 'client left');
  await flowsDrained(p.hf);
  assert.ok(await refuses({ host: reply.bound, port: reply.port }));
});

test('BIND: a cut while waiting answers 0x01 and closes the listener', async (t) => {
  const p = await startProxy(t);
  const { socket, reply } = await socksRequest(p.port, 0x02, '127.0.0.2', 0);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  const flow = p.hf.flows.list().find((f) => f.kind === 'socks5-bind');
  assert.ok(flow);
  flow.cut(new EgressLostError('lo: test cut'));
  const second = await readReply(socket);
  assert.equal(second.rep, 0x01);
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-bind');
  assert.equal(close.reason, 'cut');
  assert.ok(await refuses({ host: reply.bound, port: reply.port }));
});

test('BIND for a name that does not resolve gets 0x04', { skip: skipOutsideSandbox }, async (t) => {
  const p = await startProxy(t);
  // .invalid never resolves (RFC 6761); in the sandbox the resolver is 127.0.0.1, where nothing answers
  const { socket, reply } = await socksRequest(p.port, 0x02, 'no-such-host.invalid', 0);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x04);
  assert.equal(p.hf.flows.size, 0);
});
