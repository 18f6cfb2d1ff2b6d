// The dialer with the addon's pinned sockets and the monitor's epoch (egress/dial.ts Spares), on
// loopback: the first dial through an egress makes its socket; a little later a spare is made,
// and the next dial takes it without a socket() of its own, connects, and is bound to the egress's
// source; a flow that wrote its first bytes upstream (it waits for its server), or that ended,
// gets the next spare made at once; after a network event (the epoch
// moves) the dial makes its own again; close() ends it. After a burst of dials that found no
// spare, that many are kept for the next burst.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Socket } from 'node:net';
import type { Egress, Target } from '../../src/contracts.js';
import { Spares, createDialer } from '../../src/egress/dial.js';
import { Cancel } from '../../src/cancel.js';
import type { NativeAddon } from '../../src/native.js';
import { addon as loadedAddon, needsAddon as opts } from '../helpers/addon.js';
import { startProxy } from '../helpers/proxy.js';
import { tcpServer } from '../helpers/servers.js';
import { readN } from '../helpers/socks-client.js';
import { deferred } from '../helpers/proc.js';


const lo: Egress = { ifname: 'lo', source: '127.0.0.1', family: 4, placedBy: 'route' };

const pastFill = () => sleep(Spares.fillDelayMs + 30);

test('dial spares: the next dial takes the pinned socket made for it; a network event retires it', opts, async (t) => {
  const real = loadedAddon();
  const opened: number[] = [];
  const addon: NativeAddon = {
    ...real,
    openBound: (...a: Parameters<NativeAddon['openBound']>) => {
      const fd = real.openBound(...a);
      opened.push(fd);
      return fd;
    },
  };
  let epoch = 1;
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 1000 }, addon, { epoch: () => epoch });
  t.after(() => dialer.close?.());
  const accepted: Socket[] = [];
  const { port } = await tcpServer(t, (s) => accepted.push(s));
  const target: Target = { ip: '127.0.0.1', family: 4, port };
  const sockets: Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  const dial = async (): Promise<{ made: number; socket: Socket }> => {
    const before = opened.length;
    const pending = dialer.dial(target, lo);
    const made = opened.length - before; // sockets made by the dial itself, before it connects
    const socket = await pending;
    sockets.push(socket);
    assert.equal(socket.localAddress, '127.0.0.1', 'bound to the egress source');
    assert.equal(socket.remotePort, port);
    return { made, socket };
  };

  assert.equal((await dial()).made, 1, 'the first dial through lo makes its socket');
  await pastFill();
  assert.equal(opened.length, 2, 'a spare is made after it');
  assert.equal((await dial()).made, 0, 'the next dial takes the spare');
  await pastFill();
  assert.equal(opened.length, 3);
  // a flow ends before the delay (the flow table tells the dialer): the spare is made at the next
  // turn of the loop, so it is there when the next flow's dial comes (a slow machine may have
  // reached the delayed fill first: the spare is there either way)
  const quick = await dial();
  assert.equal(quick.made, 0, 'it took the spare');
  const before = opened.length;
  quick.socket.destroy();
  dialer.spareTime?.('lo', '127.0.0.1');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(opened.length, before + 1, 'a spare right after the flow ended');
  assert.equal((await dial()).made, 0, 'and the next dial takes it');
  await pastFill();
  epoch = 2; // a link, address or route event
  assert.equal((await dial()).made, 1, 'a spare from before the event is not used');
  await pastFill();
  assert.equal(opened.length, before + 4, 'and a new one is made after that dial');
  dialer.close?.();
  assert.equal((await dial()).made, 1, 'after close() a dial still works, with its own socket');
  await pastFill();
  assert.equal(opened.length, before + 5, 'and no spare is made any more');
  // every dial reached the server, spare or not
  for (let i = 0; i < 50 && accepted.length < 6; i++) await sleep(10);
  assert.equal(accepted.length, 6);
});

test('dial spares: after a burst of dials that found none, the next burst finds a spare for each', opts, async (t) => {
  const real = loadedAddon();
  let opened = 0;
  const addon: NativeAddon = {
    ...real,
    openBound: (...a: Parameters<NativeAddon['openBound']>) => {
      const fd = real.openBound(...a);
      opened++;
      return fd;
    },
  };
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 1000 }, addon, { epoch: () => 1 });
  t.after(() => dialer.close?.());
  let accepted = 0;
  const { port } = await tcpServer(t, () => accepted++);
  const target: Target = { ip: '127.0.0.1', family: 4, port };
  const sockets: Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  const BURST = 10;
  /** BURST dials at once: how many sockets they made themselves (no spare for them) */
  const burst = async (): Promise<number> => {
    const before = opened;
    const pending = Array.from({ length: BURST }, () => dialer.dial(target, lo));
    const made = opened - before;
    for (const socket of await Promise.all(pending)) {
      sockets.push(socket);
      assert.equal(socket.localAddress, '127.0.0.1', 'bound to the egress source');
    }
    return made;
  };
  /** until `n` sockets were opened in all (spares are made on timers), at most 5 s */
  const untilOpened = async (n: number): Promise<void> => {
    for (let i = 0; i < 500 && opened < n; i++) await sleep(10);
    assert.equal(opened, n);
  };

  assert.equal(await burst(), BURST, 'the first burst: no spare was ever made for lo');
  await untilOpened(BURST + 1);
  assert.equal(await burst(), BURST - 1, 'the next: one spare, as after any dial');
  // the dials that found none each ask for one more spare, made once the dials paused
  await untilOpened(2 * BURST + BURST);
  await sleep(Spares.quietMs * 3);
  assert.equal(opened, 3 * BURST, 'no more than the burst asked for');
  assert.equal(await burst(), 0, 'the third burst: a spare for every dial');
  for (let i = 0; i < 100 && accepted < 3 * BURST; i++) await sleep(10);
  assert.equal(accepted, 3 * BURST, 'every dial reached the server');
});

test('dial spares: a spare asked for waits while another dial is on its way; a dial that fails or is called off settles too', opts, async (t) => {
  const real = loadedAddon();
  let opened = 0;
  const addon: NativeAddon = {
    ...real,
    openBound: (...a: Parameters<NativeAddon['openBound']>) => {
      opened++;
      return real.openBound(...a);
    },
    closeFd: (fd: number) => real.closeFd(fd),
  };
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 1000 }, addon, { epoch: () => 1 });
  t.after(() => dialer.close?.());
  const { port } = await tcpServer(t, () => {});
  // a port nothing listens on (a server's, closed again): the dial fails (ECONNREFUSED)
  const gone = createServer().listen(0, '127.0.0.1');
  await once(gone, 'listening');
  const refused = (gone.address() as { port: number }).port;
  await new Promise((resolve) => gone.close(resolve));
  const sockets: Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
  // setTimeout stands still: only spareTime can make a spare
  t.mock.timers.enable({ apis: ['setTimeout'] });

  sockets.push(await dialer.dial({ ip: '127.0.0.1', family: 4, port }, lo)); // asks for a spare
  assert.equal(opened, 1);
  const failing = dialer.dial({ ip: '127.0.0.1', family: 4, port: refused }, lo).then(
    () => assert.fail('the dial to a closed port connected'),
    (err: unknown) => err,
  );
  dialer.spareTime?.('lo', '127.0.0.1'); // the first flow waits for its server, but a dial is on its way
  await nextTurn();
  assert.equal(opened, 2, 'no spare while the other dial is on its way (only its own socket)');
  assert.match(String(await failing), /ECONNREFUSED/);
  dialer.spareTime?.('lo', '127.0.0.1');
  await nextTurn();
  assert.equal(opened, 3, 'the failed dial settled: the spare is made');

  sockets.push(await dialer.dial({ ip: '127.0.0.1', family: 4, port }, lo)); // takes it, asks again
  assert.equal(opened, 3);
  const off = new Cancel();
  off.abort(new Error('client left'));
  await assert.rejects(dialer.dial({ ip: '127.0.0.1', family: 4, port }, lo, off), /client left/);
  dialer.spareTime?.('lo', '127.0.0.1');
  await nextTurn();
  assert.equal(opened, 5, 'a dial called off before it began settled too (its socket, then the spare)');
});

/**
 * A holdfast whose addon counts the pinned sockets it makes, a server, and setTimeout standing
 * still from then on: the delayed fill cannot come, only a flow's own moments can ask for a spare.
 * Each test waits for its flow's end: stopped with a flow open, under the mocked timers, the
 * test process would not exit.
 */
async function countingProxy(t: TestContext, onServerSocket: (s: Socket) => void) {
  const real = loadedAddon();
  const counts = { opened: 0 };
  // (an addon's functions are not enumerable: a spread would copy none of them)
  const addon: NativeAddon = {
    openBound: (...a: Parameters<NativeAddon['openBound']>) => {
      counts.opened++;
      return real.openBound(...a);
    },
    routeSource: (...a: Parameters<NativeAddon['routeSource']>) => real.routeSource(...a),
    closeFd: (fd: number) => real.closeFd(fd),
  };
  const p = await startProxy(t, {}, undefined, { addon });
  const { port } = await tcpServer(t, onServerSocket);
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const c = connect({ host: '127.0.0.1', port: p.port });
  t.after(() => c.destroy());
  await once(c, 'connect');
  return { p, port, c, counts };
}

const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n';
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

test('dial spares, through holdfast: a CONNECT flow that wrote its first bytes upstream has the next spare made while it waits for its server', opts, async (t) => {
  const arrived = deferred<Socket>();
  // the server reads the client's byte and stays silent: the flow waits for it
  const { p, port, c, counts } = await countingProxy(t, (s) => s.once('data', () => arrived.resolve(s)));
  c.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  assert.match((await readN(c, ESTABLISHED.length)).toString(), /^HTTP\/1\.1 200 /);
  assert.equal(counts.opened, 1, 'the flow made its own socket, and no spare came with the 200');
  c.write('?');
  const server = await arrived.promise;
  await nextTurn();
  assert.equal(counts.opened, 2, 'a spare once the first bytes went upstream, with the flow still open');
  assert.equal(p.hf.flows.size, 1, 'the flow is still waiting for its server');
  server.end('x');
  assert.equal((await readN(c, 1)).toString(), 'x');
  await p.logs.waitFor((l) => l.msg === 'flow close');
  await nextTurn();
  assert.equal(counts.opened, 2, 'its end asks for no second one');
});

test('dial spares, through holdfast: bytes sent with the CONNECT head go upstream at once, and the spare is made in the wait that follows', opts, async (t) => {
  const arrived = deferred<Socket>();
  const { p, port, c, counts } = await countingProxy(t, (s) => s.once('data', () => arrived.resolve(s)));
  c.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n?`);
  assert.match((await readN(c, ESTABLISHED.length)).toString(), /^HTTP\/1\.1 200 /);
  const server = await arrived.promise;
  await nextTurn();
  assert.equal(counts.opened, 2, 'a spare once the early bytes went upstream, with the flow still open');
  assert.equal(p.hf.flows.size, 1);
  server.end('x');
  assert.equal((await readN(c, 1)).toString(), 'x');
  await p.logs.waitFor((l) => l.msg === 'flow close');
});

test('dial spares, through holdfast: a CONNECT flow that ends before the client sent anything has the next spare made at once (the flow table tells the dialer)', opts, async (t) => {
  // the server speaks first and closes: the client never writes, and the flow ends at once
  const { p, port, c, counts } = await countingProxy(t, (s) => s.end('x'));
  c.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const got = (await readN(c, ESTABLISHED.length + 1)).toString();
  assert.equal(got, `${ESTABLISHED}x`);
  assert.equal(counts.opened, 1, 'the flow made its own socket');
  await p.logs.waitFor((l) => l.msg === 'flow close');
  // the flow's end asked for the spare at the next turn of the loop, before this one
  await nextTurn();
  assert.equal(counts.opened, 2, 'a spare right after the flow ended, with the delayed fill not yet due');
});
