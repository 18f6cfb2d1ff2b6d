// A pinned upstream socket keeps its local port to itself. The kernel matches a socket bound to a
// device (SO_BINDTODEVICE) only for lookups on that device, and an unbound socket's connect()
// looks on none: had the addon left the port to connect() (IP_BIND_ADDRESS_NO_PORT), another
// program's connect() to the same server from the same address could take a live tunnel's port.
// Two connections with one 4-tuple: the server's end of the tunnel is reset, or taken over, and
// the tunnel stalls in retransmissions. Measured here before the fix: with 1000 pinned sockets to
// one server, 1411 of 20,000 plain connects took a port one of them held. On loopback, through
// holdfast: live tunnels, then plain connects from this process to the same server.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { needsAddon as opts } from '../helpers/addon.js';
import { startProxy } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { echoServer, tcpServer } from '../helpers/servers.js';
import { readN, socksRequest } from '../helpers/socks-client.js';

const TUNNELS = 200;
const CONNECTS = 4000;

test('pinned ports: plain connects to the same server never take a live tunnel\'s upstream port, and every tunnel still carries bytes', opts, async (t) => {
  // an echo server that notes the remote port of each connection it accepts
  const remotePorts = new Set<number>();
  const server = await tcpServer(t, (s) => {
    if (s.remotePort !== undefined) remotePorts.add(s.remotePort);
    s.on('error', () => {});
    s.on('data', (d) => s.write(d));
  });
  const p = await startProxy(t);
  assert.equal(p.hf.binder, 'device', 'holdfast pins with the addon (SO_BINDTODEVICE)');

  const tunnels: Socket[] = [];
  t.after(() => {
    for (const s of tunnels) s.destroy();
  });
  for (let i = 0; i < TUNNELS; i++) {
    const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', server.port);
    tunnels.push(socket);
    assert.equal(reply.rep, 0x00, `tunnel ${i} opened`);
  }
  // the tunnels' upstream ports, as the server saw them
  const upstreamPorts = new Set(remotePorts);
  assert.equal(upstreamPorts.size, TUNNELS, 'the server saw one connection per tunnel');

  // plain connects from this process to the same server, from the same address: each is reset at
  // once (no TIME_WAIT left behind)
  let took = 0;
  let failed = 0;
  for (let i = 0; i < CONNECTS; i++) {
    const s = connect(server.port, '127.0.0.1');
    const ok = await Promise.race([once(s, 'connect').then(() => true), once(s, 'error').then(() => false)]);
    if (!ok) failed++;
    else if (upstreamPorts.has(s.localPort!)) took++;
    s.resetAndDestroy();
  }
  assert.equal(took, 0, `${took} of ${CONNECTS} plain connects took a port a live tunnel's upstream held`);
  assert.equal(failed, 0, 'every plain connect connected');

  // and every tunnel still goes through, to the end it was opened to
  await Promise.all(
    tunnels.map(async (s, i) => {
      const msg = Buffer.from(`tunnel ${i} `);
      s.write(msg);
      assert.deepEqual(await readN(s, msg.length, 10_000), msg, `tunnel ${i} echoes`);
    }),
  );
});

const PORT_RANGE = '/proc/sys/net/ipv4/ip_local_port_range';

/**
 * Four consecutive ports no TCP socket of this namespace has as its local port, TIME_WAIT
 * included (`ss`): earlier tests' pinned sockets reserved ports, and one in TIME_WAIT keeps its
 * port from every autobind for a minute, which would leave the narrowed range short.
 */
function fourFreePorts(): number {
  const used = new Set<number>();
  for (const line of execFileSync('ss', ['-Htan'], { encoding: 'utf8' }).split('\n')) {
    const local = line.trim().split(/\s+/)[3]; // state, recv-q, send-q, local, peer
    const m = local === undefined ? null : /:(\d+)$/.exec(local);
    if (m) used.add(Number(m[1]));
  }
  for (let p = 40_000; p < 60_000; p += 4) if (![0, 1, 2, 3].some((i) => used.has(p + i))) return p;
  throw new Error('no four consecutive free ports in 40000-59999');
}

test('pinned ports: with no local port free to reserve (the range held by other connections), a dial still goes ahead on a port whose 4-tuple is new', { skip: sandboxSkip() ?? opts.skip }, async (t) => {
  // servers and holdfast listen first, on ports of the normal range
  const occupied = await tcpServer(t, (s) => s.on('error', () => {}));
  const target = await echoServer(t);
  const p = await startProxy(t);
  assert.equal(p.hf.binder, 'device', 'holdfast pins with the addon (SO_BINDTODEVICE)');
  // then a local range of four ports (this namespace's own), every one taken by a plain
  // connection from 127.0.0.1: a reserving bind there finds none free
  const before = readFileSync(PORT_RANGE, 'utf8').trim();
  t.after(() => writeFileSync(PORT_RANGE, `${before}\n`));
  const low = fourFreePorts();
  writeFileSync(PORT_RANGE, `${low} ${low + 3}\n`);
  const holders: Socket[] = [];
  t.after(() => {
    for (const s of holders) s.resetAndDestroy();
  });
  for (let i = 0; i < 4; i++) {
    const s = connect(occupied.port, '127.0.0.1');
    holders.push(s);
    await once(s, 'connect');
  }
  assert.deepEqual(
    holders.map((s) => s.localPort).sort(),
    [low, low + 1, low + 2, low + 3],
    'the four ports are held',
  );

  // a tunnel through holdfast to another server: its pinned socket cannot reserve a port, and
  // takes one whose 4-tuple (to this server) is still free
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', target.port);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x00, 'the dial succeeded');
  const msg = Buffer.from('through a shared port');
  socket.write(msg);
  assert.deepEqual(await readN(socket, msg.length), msg, 'the tunnel carries bytes');
});
