// SOCKS5 UDP ASSOCIATE through a real holdfast on loopback, with the `socks` client (associate)
// and raw dgram sockets: echo to IPv4, IPv6 and named destinations, the client-only rule, FRAG,
// malformed and oversized datagrams, the end of an association (control connection closed, idle,
// cut) and its /status entry.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { test, type TestContext } from 'node:test';
import { createPinnedSockets } from '../../src/egress/dial-udp.js';
import { EgressLostError } from '../../src/errors.js';
import { loadAddon } from '../../src/native.js';
import { flowsDrained, startProxy, type TestProxy } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { socksRequest } from '../helpers/socks-client.js';
import { frame, socksAssociate, udpEcho, udpEchoBoth, udpSocket, unframe } from '../helpers/udp-echo.js';
import { SocketAddress, type Socket } from 'node:net';

// Tests whose datagrams may name destinations that are not ours (random bytes that parse, a name
// only a DNS server could answer) run only inside the loopback-only namespace.
const skipOutsideSandbox = sandboxSkip();

interface UdpStatus {
  udp: Record<string, number>;
  bind: Record<string, number>;
}
interface FlowJson {
  id: number;
  kind: string;
  egress: string | null;
  ip: string | null;
  src: string | null;
  dst: string;
  bytesUp: number;
  bytesDown: number;
  datagramsUp?: number;
  datagramsDown?: number;
}

async function statusOf(p: TestProxy): Promise<{ flows: FlowJson[]; socks5: UdpStatus }> {
  const res = await fetch(`${p.url}/status`);
  assert.equal(res.status, 200);
  return (await res.json()) as { flows: FlowJson[]; socks5: UdpStatus };
}

/** UDP ASSOCIATE with the `socks` client; the control socket is destroyed by t.after. */
async function associate(t: TestContext, p: TestProxy, dest = { host: '0.0.0.0', port: 0 }): Promise<{ control: Socket; relay: { host: string; port: number } }> {
  const a = await socksAssociate({ host: p.host, port: p.port }, dest);
  t.after(() => a.socket.destroy());
  a.socket.on('error', () => {});
  return { control: a.socket, relay: a.relay };
}

test('UDP ASSOCIATE relays to IPv4, IPv6 and named destinations; replies name their source; /status shows the association', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEchoBoth(t);
  const { control, relay } = await associate(t, p);
  assert.equal(relay.host, '127.0.0.1', 'the relay is on the address the client reached holdfast at');
  assert.ok(relay.port > 0);
  const c = await udpSocket(t);

  c.socket.send(frame('127.0.0.1', echo.port, 'to-v4'), relay.port, relay.host);
  const r1 = unframe((await c.inbox.next()).msg);
  assert.deepEqual([r1.host, r1.port, r1.payload.toString()], ['127.0.0.1', echo.port, 'to-v4']);

  c.socket.send(frame('::1', echo.port, 'to-v6'), relay.port, relay.host);
  const r2 = unframe((await c.inbox.next()).msg);
  assert.deepEqual([r2.host, r2.port, r2.payload.toString()], ['::1', echo.port, 'to-v6']);

  c.socket.send(frame('localhost', echo.port, 'to-name'), relay.port, relay.host);
  const r3 = unframe((await c.inbox.next()).msg);
  assert.ok(['127.0.0.1', '::1'].includes(r3.host), `a name's reply names the address that answered (${r3.host})`);
  assert.equal(r3.port, echo.port);
  assert.equal(r3.payload.toString(), 'to-name');
  const byName = [...echo.v4.seen, ...echo.v6.seen].filter((s) => s.text === 'to-name');
  assert.equal(byName.length, 1, 'the named destination got the datagram once');

  // every datagram the echo servers saw came from holdfast's pinned sockets, not from the client
  for (const s of [...echo.v4.seen, ...echo.v6.seen]) assert.notEqual(s.peerPort, c.port);

  const st = await statusOf(p);
  const flows = st.flows.filter((f) => f.kind === 'socks5-udp');
  assert.equal(flows.length, 1, JSON.stringify(st.flows));
  const f = flows[0];
  assert.equal(f.egress, 'lo');
  assert.equal(f.ip, '127.0.0.1', 'placed by its first datagram');
  assert.equal(f.src, '127.0.0.1');
  assert.equal(f.datagramsUp, 3);
  assert.equal(f.datagramsDown, 3);
  const bytes = 'to-v4'.length + 'to-v6'.length + 'to-name'.length;
  assert.equal(f.bytesUp, bytes);
  assert.equal(f.bytesDown, bytes);
  t.diagnostic(`status flow: ${JSON.stringify(f)}`);

  control.end();
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-udp');
  assert.equal(close.reason, 'done');
  assert.equal(close.bytesUp, bytes);
  const open = p.logs.byMsg('flow open').find((l) => l.kind === 'socks5-udp');
  assert.equal(open?.egress, 'lo');
  await flowsDrained(p.hf);
});

test('UDP ASSOCIATE over an IPv6 control connection: the relay is on ::1', async (t) => {
  const p = await startProxy(t, {}, ['[::1]:0']);
  const echo = await udpEcho(t, '::1');
  const { relay } = await associate(t, p, { host: '::', port: 0 });
  assert.equal(new SocketAddress({ address: relay.host, family: 'ipv6' }).address, '::1');
  const c = await udpSocket(t, '::1');
  c.socket.send(frame('::1', echo.port, 'six'), relay.port, '::1');
  const r = unframe((await c.inbox.next()).msg);
  assert.equal(r.host, '::1');
  assert.equal(r.payload.toString(), 'six');
});

test('FRAG != 0 and malformed headers are dropped and counted; the association goes on', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const { relay } = await associate(t, p);
  const c = await udpSocket(t);
  const send = (b: Buffer) => c.socket.send(b, relay.port, relay.host);

  send(frame('127.0.0.1', echo.port, 'fragment-1', 1));
  send(frame('127.0.0.1', echo.port, 'fragment-x', 0x81));
  send(Buffer.from([0, 0])); // truncated
  send(Buffer.from([0, 0, 0, 0x05, 1, 2, 3, 4, 0, 80])); // unknown ATYP
  send(Buffer.from([0, 0, 0, 0x03, 0])); // empty name
  send(Buffer.from([0, 0, 0, 0x01, 127, 0, 0])); // address cut short
  send(frame('127.0.0.1', echo.port, 'whole'));
  const r = unframe((await c.inbox.next()).msg);
  assert.equal(r.payload.toString(), 'whole', 'the first reply is the whole datagram sent last');
  assert.deepEqual(
    echo.seen.map((s) => s.text),
    ['whole'],
    'the echo server saw only the valid datagram',
  );
  const counters = p.hf.status() as unknown as { socks5: UdpStatus };
  assert.equal(counters.socks5.udp.frag, 2);
  assert.equal(counters.socks5.udp.malformed, 4);
  const st = await statusOf(p);
  assert.equal(st.socks5.udp.frag, 2, '/status shows the counters');
  const f = st.flows.find((x) => x.kind === 'socks5-udp');
  assert.equal(f?.datagramsUp, 1);
});

test('random bytes to the relay never crash it (2000 datagrams), and a valid datagram still goes through', { skip: skipOutsideSandbox }, async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const { relay } = await associate(t, p);
  const c = await udpSocket(t);
  for (let i = 0; i < 2000; i++) {
    const len = i % 10 === 0 ? 0 : 1 + (i % 300);
    const b = randomBytes(len);
    if (len > 3 && i % 2 === 0) {
      b[0] = 0;
      b[1] = 0;
      b[2] = 0; // FRAG 0: only the ATYP and what follows are random
    }
    c.socket.send(b, relay.port, relay.host);
    if (i % 200 === 199) await new Promise((r) => setImmediate(r));
  }
  // Random datagrams that happen to parse go to random destinations (in the sandbox only loopback
  // answers, and nothing listens there) or names (which fail to resolve); while those wait, the
  // association holds at most 64 datagrams and drops the rest (queueFull). So ask until the
  // answer comes, bounded: 20 tries, 500 ms each.
  let got = '';
  for (let i = 0; i < 20 && !got.startsWith('still-alive'); i++) {
    c.socket.send(frame('127.0.0.1', echo.port, `still-alive ${i}`), relay.port, relay.host);
    try {
      for (;;) {
        got = unframe((await c.inbox.next(500)).msg).payload.toString();
        if (got.startsWith('still-alive')) break;
      }
    } catch {
      /* nothing within 500 ms: ask again */
    }
  }
  assert.ok(got.startsWith('still-alive'), 'a valid datagram went through after the flood');
  const u = (p.hf.status() as unknown as { socks5: UdpStatus }).socks5.udp;
  t.diagnostic(`counters after the fuzz: ${JSON.stringify(u)}`);
  assert.ok(u.malformed > 0);
});

test('datagrams from a foreign address or port are dropped and counted; the client still gets through', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const { relay } = await associate(t, p);
  const c = await udpSocket(t);
  const other = await udpSocket(t, '127.0.0.2'); // another loopback address: another host, for the relay
  const samehostOther = await udpSocket(t); // same address, another port

  // before the client's first datagram its port is not known: its address is what counts
  other.socket.send(frame('127.0.0.1', echo.port, 'foreign-address'), relay.port, relay.host);
  c.socket.send(frame('127.0.0.1', echo.port, 'first'), relay.port, relay.host);
  assert.equal(unframe((await c.inbox.next()).msg).payload.toString(), 'first');
  // now its port is fixed too
  samehostOther.socket.send(frame('127.0.0.1', echo.port, 'foreign-port'), relay.port, relay.host);
  other.socket.send(frame('127.0.0.1', echo.port, 'foreign-address-2'), relay.port, relay.host);
  c.socket.send(frame('127.0.0.1', echo.port, 'second'), relay.port, relay.host);
  assert.equal(unframe((await c.inbox.next()).msg).payload.toString(), 'second');

  assert.deepEqual(echo.seen.map((s) => s.text), ['first', 'second']);
  assert.equal(other.inbox.all.length, 0, 'nothing went back to the foreign address');
  assert.equal(samehostOther.inbox.all.length, 0, 'nothing went back to the foreign port');
  const u = (p.hf.status() as unknown as { socks5: UdpStatus }).socks5.udp;
  assert.equal(u.foreign, 3);
});

test('a port given in the request (DST.PORT) is the only one the relay accepts', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const c = await udpSocket(t);
  const intruder = await udpSocket(t);
  const { socket: control, reply } = await socksRequest(p.port, 0x03, '127.0.0.1', c.port);
  t.after(() => control.destroy());
  assert.equal(reply.rep, 0);
  // the intruder speaks first: with DST.PORT given, being first does not make it the client
  intruder.socket.send(frame('127.0.0.1', echo.port, 'intruder'), reply.port, reply.bound);
  c.socket.send(frame('127.0.0.1', echo.port, 'client'), reply.port, reply.bound);
  assert.equal(unframe((await c.inbox.next()).msg).payload.toString(), 'client');
  assert.deepEqual(echo.seen.map((s) => s.text), ['client']);
  assert.equal((p.hf.status() as unknown as { socks5: UdpStatus }).socks5.udp.foreign, 1);
});

test('the association ends with its control connection: the relay port refuses, the flow is gone', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const { control, relay } = await associate(t, p);
  const c = await udpSocket(t);
  c.socket.send(frame('127.0.0.1', echo.port, 'before'), relay.port, relay.host);
  assert.equal(unframe((await c.inbox.next()).msg).payload.toString(), 'before');

  control.destroy(); // abrupt: a reset or a FIN, holdfast ends the association either way
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-udp');
  t.diagnostic(`flow close: ${JSON.stringify(close)}`);
  await flowsDrained(p.hf);

  // the relay socket is closed: a datagram to it gets ICMP port unreachable (ECONNREFUSED on a
  // connected socket), and nothing reaches the echo server
  const probe = createSocket('udp4');
  t.after(() => probe.close());
  probe.connect(relay.port, relay.host);
  await once(probe, 'connect');
  const refused = once(probe, 'error', { signal: AbortSignal.timeout(5000) });
  probe.send(frame('127.0.0.1', echo.port, 'after'));
  const [err] = (await refused) as [NodeJS.ErrnoException];
  assert.equal(err.code, 'ECONNREFUSED');
  c.socket.send(frame('127.0.0.1', echo.port, 'after-2'), relay.port, relay.host);
  // the echo server is on loopback too: if 'after-2' had been relayed, it would have arrived
  // before this marker sent later on the same path
  const marker = await udpSocket(t);
  marker.socket.send('marker', echo.port, '127.0.0.1');
  await marker.inbox.next();
  assert.deepEqual(echo.seen.map((s) => s.text), ['before', 'marker']);
});

test('an association idle for udp.idleTimeout ends, and its control connection is closed', async (t) => {
  const p = await startProxy(t, { udp: { idleTimeout: 300 } });
  const echo = await udpEcho(t);
  const { control, relay } = await associate(t, p);
  const c = await udpSocket(t);
  const t0 = Date.now();
  c.socket.send(frame('127.0.0.1', echo.port, 'once'), relay.port, relay.host);
  await c.inbox.next();
  await once(control, 'close', { signal: AbortSignal.timeout(5000) });
  const idleMs = Date.now() - t0;
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-udp');
  assert.equal(close.reason, 'idle');
  assert.ok(idleMs >= 290, `closed after ${idleMs} ms, not before the idle timeout`);
  t.diagnostic(`idle association closed ${idleMs} ms after its last datagram (timeout 300 ms)`);
  await flowsDrained(p.hf);
});

test('oversized datagrams are dropped and counted, both ways', async (t) => {
  // the client side over IPv6 can carry 65527 bytes: more than an IPv4 destination can take
  const p = await startProxy(t, {}, ['[::1]:0']);
  const big = Buffer.alloc(65_507, 0x61);
  const echo4 = await udpEcho(t, '127.0.0.1', 0, (msg) => (msg.toString() === 'send-big' ? big : msg));
  const { relay } = await associate(t, p, { host: '::', port: 0 });
  const c = await udpSocket(t, '::1');
  const send = (b: Buffer) => c.socket.send(b, relay.port, '::1');
  // up: 65517 bytes of payload to an IPv4 destination
  send(frame('127.0.0.1', echo4.port, Buffer.alloc(65_517, 0x62)));
  // down: a maximal IPv4 reply (65507 bytes) plus its 10-byte header fits in IPv6's 65527
  send(frame('127.0.0.1', echo4.port, 'send-big'));
  const down = unframe((await c.inbox.next()).msg);
  assert.equal(down.payload.length, 65_507, 'a maximal IPv4 reply still fits the IPv6 relay with its header');
  send(frame('127.0.0.1', echo4.port, 'marker'));
  assert.equal(unframe((await c.inbox.next()).msg).payload.toString(), 'marker');
  assert.deepEqual(echo4.seen.map((s) => s.text.slice(0, 8)), ['send-big', 'marker'], 'the oversized payload never left');
  assert.equal((p.hf.status() as unknown as { socks5: UdpStatus }).socks5.udp.oversized, 1);

  // down, over IPv4: the same reply plus a 10-byte header exceeds what IPv4 carries
  const p4 = await startProxy(t);
  const a4 = await associate(t, p4);
  const c4 = await udpSocket(t);
  c4.socket.send(frame('127.0.0.1', echo4.port, 'send-big'), a4.relay.port, a4.relay.host);
  c4.socket.send(frame('127.0.0.1', echo4.port, 'marker-4'), a4.relay.port, a4.relay.host);
  assert.equal(unframe((await c4.inbox.next()).msg).payload.toString(), 'marker-4');
  assert.equal(c4.inbox.pending, 0);
  const u4 = (p4.hf.status() as unknown as { socks5: UdpStatus }).socks5.udp;
  assert.equal(u4.oversized, 1, 'the oversized reply was dropped and counted');
  const f = p4.hf.flows.list()[0];
  assert.equal(f.datagramsDown, 1);
});

test('a cut association resets its control connection and closes its sockets', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const { control, relay } = await associate(t, p);
  const c = await udpSocket(t);
  c.socket.send(frame('127.0.0.1', echo.port, 'x'), relay.port, relay.host);
  await c.inbox.next();
  const flow = p.hf.flows.list().find((f) => f.kind === 'socks5-udp');
  assert.ok(flow);
  const closed = new Promise((r) => control.once('close', r));
  const errored = once(control, 'error', { signal: AbortSignal.timeout(5000) });
  assert.equal(flow.cut(new EgressLostError('lo: test cut')), true);
  const [err] = (await errored) as [NodeJS.ErrnoException];
  await closed;
  assert.equal(err.code, 'ECONNRESET', 'the control connection was reset');
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.kind === 'socks5-udp');
  assert.equal(close.reason, 'cut');
  assert.equal(close.code, 'HF_EGRESS_LOST');
  await flowsDrained(p.hf);
});

test('a name that does not resolve is dropped and counted; the association goes on', { skip: skipOutsideSandbox }, async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const { relay } = await associate(t, p);
  const c = await udpSocket(t);
  c.socket.send(frame('no-such-host.invalid', echo.port, 'lost'), relay.port, relay.host);
  // the name resolves (or fails) asynchronously: wait for the count, against a deadline
  const deadline = Date.now() + 10_000;
  while ((p.hf.status() as unknown as { socks5: UdpStatus }).socks5.udp.unresolved < 1) {
    assert.ok(Date.now() < deadline, 'the unresolvable name was counted within 10 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  c.socket.send(frame('127.0.0.1', echo.port, 'found'), relay.port, relay.host);
  assert.equal(unframe((await c.inbox.next()).msg).payload.toString(), 'found');
});

test('pinned UDP sockets and listeners are bound to the egress address, with and without the addon', async (t) => {
  const state = loadAddon();
  const egress = { ifname: 'lo', source: '127.0.0.1', family: 4, placedBy: 'route' } as const;
  const egress6 = { ifname: 'lo', source: '::1', family: 6, placedBy: 'route' } as const;
  const kinds = [{ name: 'source only', pinned: createPinnedSockets(undefined) }];
  if (state.ok) kinds.push({ name: 'device (addon)', pinned: createPinnedSockets(state.addon) });
  else t.diagnostic(`addon not loaded (${state.why}): only the source-only binder is checked`);
  for (const k of kinds) {
    for (const e of [egress, egress6]) {
      const s = await k.pinned.udp(e);
      t.after(() => s.close());
      assert.equal(s.address().address, e.source, `${k.name}: the UDP socket is bound to ${e.source}`);
      assert.ok(s.address().port > 0);
      const srv = await k.pinned.listen(e, (c) => c.destroy());
      t.after(() => srv.close());
      const a = srv.address();
      assert.ok(a && typeof a === 'object' && a.address === e.source, `${k.name}: the listener is on ${e.source}`);
    }
    // an address the interface does not have, an interface that does not exist
    await assert.rejects(k.pinned.udp({ ...egress, source: '192.0.2.1' }), (err: { code?: string }) => err.code === 'HF_NET_UNREACHABLE');
  }
  if (state.ok) {
    await assert.rejects(
      createPinnedSockets(state.addon).udp({ ...egress, ifname: 'nosuchif0' }),
      (err: { code?: string }) => err.code === 'HF_NET_UNREACHABLE',
      'a missing device is the path failing, not an internal error',
    );
  }
});
