// MPTCP (issue 14 part 1) without a kernel: the endpoint plan (monitor snapshot -> endpoints to
// add and remove, limits to raise), the sync helper against a recorded `ip` (removes exactly
// what it added, puts the limits back), and the FlowTable's choice between cutting a flow and
// moving it to a live subflow (a fake subflow probe). The real thing runs in
// test/netns/mptcp.test.ts.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Destination, NetInterface, Subflow } from '../../src/contracts.js';
import { parseConfig } from '../../src/config.js';
import { FlowTable } from '../../src/flows.js';
import { Monitor } from '../../src/net/monitor.js';
import {
  MptcpEndpoints,
  OWN_ID_MIN,
  parseEndpoints,
  parseLimits,
  planEndpoints,
  type Endpoint,
} from '../../src/system/mptcp-endpoints.js';
import type { IpRun } from '../../src/system/policy-routing.js';
import { FakeClock, FakeMonitor, FakeReader, flush, iface, logSink, loopback, snapshot, withIface } from '../helpers/fakes.js';

const wlan = (patch: Partial<NetInterface> = {}) =>
  withIface(
    iface('wlan0', {
      index: 3,
      addresses: ['10.1.1.2/24', 'fd01:1::2/64', 'fe80::1%wlan0/64'],
      routes: [
        { family: 4, metric: 600 },
        { family: 6, metric: 600 },
      ],
    }),
    patch,
  );
const eth = (patch: Partial<NetInterface> = {}) =>
  withIface(iface('eth0', { index: 2, addresses: ['192.168.7.20/24'], routes: [{ family: 4, metric: 100 }] }), patch);
const docker = () => iface('docker0', { index: 9, addresses: ['172.17.0.1/16'] });
const LIMITS = { subflows: 2, addAddrAccepted: 0 };

// ---------------------------------------------------------------------------------------------
// The plan

test('planEndpoints: one `subflow backup` endpoint per usable address (default route of its family, no link-local, no loopback)', () => {
  const plan = planEndpoints(snapshot([loopback(), wlan(), eth(), docker()]), [], LIMITS);
  assert.deepEqual(
    plan.add.map((e) => `${e.ip}%${e.dev} id ${e.id}${e.subflow ? ' subflow' : ''}${e.backup ? ' backup' : ''}`),
    [`10.1.1.2%wlan0 id ${OWN_ID_MIN} subflow backup`, `fd01:1::2%wlan0 id ${OWN_ID_MIN + 1} subflow backup`, `192.168.7.20%eth0 id ${OWN_ID_MIN + 2} subflow backup`],
  );
  assert.deepEqual(plan.remove, []);
  assert.deepEqual(plan.limits, { subflows: 3, addAddrAccepted: 3 }, 'limits raised to the endpoint count');
  assert.deepEqual(plan.missing, []);
});

test('planEndpoints: the host\'s endpoints are used and never duplicated or removed; ours for a gone address are removed', () => {
  const host: Endpoint = { ip: '10.1.1.2', dev: 'wlan0', id: 1, subflow: true, backup: false };
  const hostSignal: Endpoint = { ip: '192.168.7.20', dev: 'eth0', id: 2, subflow: false, backup: false };
  const stale: Endpoint = { ip: '10.9.9.9', dev: 'wlan0', id: OWN_ID_MIN, subflow: true, backup: true };
  const ours: Endpoint = { ip: 'fd01:1::2', dev: 'wlan0', id: OWN_ID_MIN + 1, subflow: true, backup: true };
  const plan = planEndpoints(snapshot([loopback(), wlan(), eth()]), [host, hostSignal, stale, ours], { subflows: 8, addAddrAccepted: 8 });
  assert.deepEqual(plan.add, [], 'every usable address has an endpoint already');
  assert.deepEqual(plan.remove, [stale]);
  assert.equal(plan.limits, null, 'limits high enough: left alone');
  assert.deepEqual(plan.missing.map((m) => m.ip), ['192.168.7.20'], "the host's endpoint without `subflow` is reported, not changed");
});

test('planEndpoints: losing carrier changes nothing (a short outage heals); losing the address or the default route removes ours', () => {
  const have: Endpoint[] = [{ ip: '192.168.7.20', dev: 'eth0', id: OWN_ID_MIN, subflow: true, backup: true }];
  const noCarrier = planEndpoints(snapshot([eth({ carrier: false })]), have, { subflows: 1, addAddrAccepted: 1 });
  assert.deepEqual([noCarrier.add, noCarrier.remove, noCarrier.limits], [[], [], null]);
  const noAddr = planEndpoints(snapshot([eth({ addresses: [] })]), have, LIMITS);
  assert.deepEqual(noAddr.remove, have);
  const noRoute = planEndpoints(snapshot([eth({ defaultRoutes: [] })]), have, LIMITS);
  assert.deepEqual(noRoute.remove, have);
  const down = planEndpoints(snapshot([eth({ up: false })]), have, LIMITS);
  assert.deepEqual(down.remove, have);
});

test('planEndpoints: ids skip those in use; without permission nothing is planned, everything is reported missing', () => {
  const ours: Endpoint = { ip: '192.168.7.20', dev: 'eth0', id: OWN_ID_MIN, subflow: true, backup: true };
  const plan = planEndpoints(snapshot([eth(), wlan()]), [ours], LIMITS);
  assert.deepEqual(plan.add.map((e) => `${e.ip} ${e.id}`), [`10.1.1.2 ${OWN_ID_MIN + 1}`, `fd01:1::2 ${OWN_ID_MIN + 2}`]);
  const ro = planEndpoints(snapshot([eth(), wlan()]), [], LIMITS, false);
  assert.deepEqual([ro.add, ro.remove, ro.limits], [[], [], null]);
  assert.deepEqual(ro.missing.map((m) => `${m.ip}%${m.dev}`), ['192.168.7.20%eth0', '10.1.1.2%wlan0', 'fd01:1::2%wlan0']);
});

test('parseEndpoints / parseLimits read iproute2 output', () => {
  assert.deepEqual(parseEndpoints('[{"address":"10.9.0.1","id":200,"subflow":true,"backup":true,"dev":"d0"},{"address":"::1","id":3,"signal":true}]'), [
    { ip: '10.9.0.1', dev: 'd0', id: 200, subflow: true, backup: true },
    { ip: '::1', dev: null, id: 3, subflow: false, backup: false },
  ]);
  assert.deepEqual(parseEndpoints(''), []);
  assert.deepEqual(parseLimits('add_addr_accepted 0 subflows 2 \n'), { subflows: 2, addAddrAccepted: 0 });
  assert.equal(parseLimits('garbage'), null);
});

test('config: mptcp is off by default; on/off (and YAML 1.1 booleans) accepted; anything else refused', () => {
  assert.equal(parseConfig({}).mptcp, 'off');
  assert.equal(parseConfig({ mptcp: 'on' }).mptcp, 'on');
  assert.equal(parseConfig({ mptcp: true }).mptcp, 'on');
  assert.equal(parseConfig({ mptcp: false }).mptcp, 'off');
  assert.throws(() => parseConfig({ mptcp: 'auto' }), /mptcp/);
});

// ---------------------------------------------------------------------------------------------
// The sync helper against a recorded `ip`

function fakeIp(initial: { endpoints: Endpoint[]; limits: { subflows: number; addAddrAccepted: number } }) {
  const state = { endpoints: [...initial.endpoints], limits: { ...initial.limits } };
  const calls: string[] = [];
  const run: IpRun = async (args) => {
    const line = args.join(' ');
    if (!line.includes('show')) calls.push(line);
    if (line === '-j mptcp endpoint show') {
      return { ok: true, stderr: '', stdout: JSON.stringify(state.endpoints.map((e) => ({ address: e.ip, id: e.id, dev: e.dev ?? undefined, subflow: e.subflow, backup: e.backup }))) };
    }
    if (line === 'mptcp limits show') return { ok: true, stderr: '', stdout: `add_addr_accepted ${state.limits.addAddrAccepted} subflows ${state.limits.subflows} ` };
    let m = /^mptcp endpoint add (\S+) dev (\S+) id (\d+) subflow backup$/.exec(line);
    if (m) {
      state.endpoints.push({ ip: m[1], dev: m[2], id: Number(m[3]), subflow: true, backup: true });
      return { ok: true, stdout: '', stderr: '' };
    }
    m = /^mptcp endpoint del id (\d+)$/.exec(line);
    if (m) {
      state.endpoints = state.endpoints.filter((e) => e.id !== Number(m![1]));
      return { ok: true, stdout: '', stderr: '' };
    }
    m = /^mptcp limits set subflow (\d+) add_addr_accepted (\d+)$/.exec(line);
    if (m) {
      state.limits = { subflows: Number(m[1]), addAddrAccepted: Number(m[2]) };
      return { ok: true, stdout: '', stderr: '' };
    }
    return { ok: false, stdout: '', stderr: `unexpected: ${line}` };
  };
  return { state, calls, run };
}

test('MptcpEndpoints: removes leftovers, adds for the snapshot, follows changes, and at close removes exactly its own and puts the limits back', async () => {
  const hostEp: Endpoint = { ip: '10.1.1.2', dev: 'wlan0', id: 1, subflow: true, backup: false };
  const leftover: Endpoint = { ip: '10.7.7.7', dev: 'eth0', id: OWN_ID_MIN + 5, subflow: true, backup: true };
  const ip = fakeIp({ endpoints: [hostEp, leftover], limits: { subflows: 2, addAddrAccepted: 0 } });
  const monitor = new FakeMonitor([loopback(), wlan({ addresses: [] }), eth()]);
  const sink = logSink();
  const m = new MptcpEndpoints(monitor, { log: sink.log, hasNetAdmin: () => true }, ip.run);
  assert.equal(await m.start(), true);
  assert.deepEqual(ip.calls, [
    `mptcp endpoint del id ${OWN_ID_MIN + 5}`,
    `mptcp endpoint add 192.168.7.20 dev eth0 id ${OWN_ID_MIN} subflow backup`,
    'mptcp limits set subflow 2 add_addr_accepted 2',
  ]);
  ip.calls.length = 0;
  // wlan0 gets its addresses: its IPv4 one has the host's endpoint already, its IPv6 one gets ours
  monitor.set([loopback(), wlan(), eth()]);
  await flush();
  await m.idle();
  assert.deepEqual(ip.calls, [`mptcp endpoint add fd01:1::2 dev wlan0 id ${OWN_ID_MIN + 1} subflow backup`, 'mptcp limits set subflow 3 add_addr_accepted 3']);
  ip.calls.length = 0;
  // eth0 loses its address: our endpoint for it goes
  monitor.set([loopback(), wlan(), eth({ addresses: [] })]);
  await flush();
  await m.idle();
  assert.deepEqual(ip.calls, [`mptcp endpoint del id ${OWN_ID_MIN}`]);
  ip.calls.length = 0;
  await m.close();
  assert.deepEqual(ip.calls, [`mptcp endpoint del id ${OWN_ID_MIN + 1}`, 'mptcp limits set subflow 2 add_addr_accepted 0']);
  assert.deepEqual(ip.state.endpoints, [hostEp], "only the host's endpoint is left");
  assert.deepEqual(ip.state.limits, { subflows: 2, addAddrAccepted: 0 });
  await m.close(); // idempotent
  assert.equal(ip.calls.length, 2);
});

test('MptcpEndpoints: without CAP_NET_ADMIN it runs no command and says so once', async () => {
  const ip = fakeIp({ endpoints: [], limits: LIMITS });
  const sink = logSink();
  const m = new MptcpEndpoints(new FakeMonitor([eth()]), { log: sink.log, hasNetAdmin: () => false }, ip.run);
  assert.equal(await m.start(), false);
  await m.close();
  assert.deepEqual(ip.calls, []);
  assert.equal(sink.lines.filter((l) => /no CAP_NET_ADMIN/.test(String(l.msg))).length, 1);
});

// ---------------------------------------------------------------------------------------------
// Cut or move

const dst: Destination = { host: 'example.com', port: 443, isName: true };
const if1 = (patch: Partial<NetInterface> = {}) =>
  withIface(iface('if1', { index: 2, addresses: ['10.0.1.2/24'], routes: [{ family: 4, metric: 100 }] }), patch);
const if2 = (patch: Partial<NetInterface> = {}) =>
  withIface(iface('if2', { index: 3, addresses: ['10.0.2.2/24'], routes: [{ family: 4, metric: 200 }] }), patch);
const GRACE = 5000;

function setup(t: TestContext) {
  const clock = new FakeClock();
  const sink = logSink();
  const reader = new FakeReader([loopback(), if1(), if2()]);
  const monitor = new Monitor({ reader, watch: false, pollMs: 0 });
  t.after(() => monitor.close());
  const table = new FlowTable({ graceMs: GRACE, log: sink.log, clock });
  t.after(() => table.close());
  table.watch(monitor);
  const net = async (interfaces: NetInterface[]) => {
    reader.set(interfaces);
    monitor.readNow();
    await flush(); // the monitor tells its listeners on a later tick
  };
  return { clock, sink, table, net };
}

function mptcpFlow(table: FlowTable, subflows: () => readonly Subflow[] | null) {
  const flow = table.open('socks5-connect', '127.0.0.1:40000', dst);
  flow.pinned({
    egress: { ifname: 'if1', source: '10.0.1.2', family: 4, placedBy: 'route' },
    target: { ip: '93.184.216.34', family: 4, port: 443 },
    localAddress: '10.0.1.2',
    attempts: '',
    subflows,
  });
  const cuts: Error[] = [];
  flow.onCut((err) => cuts.push(err));
  return { flow, cuts };
}

const S1 = { local: '10.0.1.2', remote: '93.184.216.34' };
const S2 = { local: '10.0.2.2', remote: '93.184.216.34' };

test('an MPTCP flow whose pinned interface dies with a live subflow on if2 is not cut: it moves (one "flow moved", /status shows it)', async (t) => {
  const { clock, table, net, sink } = setup(t);
  const { flow, cuts } = mptcpFlow(table, () => [S1, S2]);
  assert.deepEqual(
    { transport: flow.toJSON().transport, subflows: flow.toJSON().subflows, movedFrom: flow.toJSON().movedFrom },
    { transport: 'mptcp', subflows: ['if1', 'if2'], movedFrom: undefined },
  );
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  assert.equal(cuts.length, 0, 'not cut');
  assert.equal(flow.interface, 'if2');
  assert.equal(flow.localAddress, '10.0.2.2');
  assert.equal(flow.toJSON().movedFrom, 'if1');
  const moved = sink.lines.filter((l) => l.msg === 'flow moved');
  assert.equal(moved.length, 1);
  assert.equal(moved[0].from, 'if1');
  assert.equal(moved[0].to, 'if2');
  assert.equal(moved[0].why, 'no carrier');
  assert.equal(table.totals.cut, 0);
  // and it now lives and dies with if2: losing that one too cuts it after the grace
  await net([loopback(), if1({ carrier: false }), if2({ carrier: false })]);
  clock.advance(GRACE);
  assert.equal(cuts.length, 1, 'cut once if2 is lost too');
});

test('an MPTCP flow without a live subflow elsewhere (only if1\'s, or its if2 subflow also broken, or fallen back) is cut as before', async (t) => {
  const { clock, table, net } = setup(t);
  const onlyIf1 = mptcpFlow(table, () => [S1]);
  const fellBack = mptcpFlow(table, () => null);
  const unknownAddr = mptcpFlow(table, () => [S1, { local: '10.9.9.9', remote: S1.remote }]);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  for (const f of [onlyIf1, fellBack, unknownAddr]) assert.equal(f.cuts.length, 1);
  assert.equal(table.totals.cut, 3);
});

test('a flow without a subflow probe (plain TCP) shows no mptcp fields', (t) => {
  const { table } = setup(t);
  const flow = table.open('socks5-connect', '127.0.0.1:40000', dst);
  flow.pinned({
    egress: { ifname: 'if1', source: '10.0.1.2', family: 4, placedBy: 'route' },
    target: { ip: '93.184.216.34', family: 4, port: 443 },
    localAddress: '10.0.1.2',
    attempts: '',
  });
  const j = flow.toJSON();
  assert.equal('transport' in j, false);
  assert.equal('subflows' in j, false);
});

// ---------------------------------------------------------------------------------------------
// What doctor says

test('mptcpHealth: disabled, missing endpoint (with the one-line fix), low limits, all good', async (t) => {
  const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const { mptcpHealth: pure, readMptcpHost } = await import('../../src/system/mptcp-endpoints.js');
  const mptcpHealth = async (sn: typeof snap, dir: string, run: IpRun) => pure(sn, await readMptcpHost(dir, run));
  const procSys = mkdtempSync(join(tmpdir(), 'hf-mptcp-'));
  t.after(() => rmSync(procSys, { recursive: true, force: true }));
  const wlan4 = iface('wlan0', { index: 3, addresses: ['10.1.1.2/24'], routes: [{ family: 4, metric: 600 }] });
  const snap = snapshot([loopback(), eth(), wlan4]);
  const none = await mptcpHealth(snap, procSys, fakeIp({ endpoints: [], limits: LIMITS }).run);
  assert.match(none.summary, /no MPTCP/);
  mkdirSync(join(procSys, 'net/mptcp'), { recursive: true });
  writeFileSync(join(procSys, 'net/mptcp/enabled'), '0\n');
  const off = await mptcpHealth(snap, procSys, fakeIp({ endpoints: [], limits: LIMITS }).run);
  assert.equal(off.status, 'warn');
  assert.match(off.fix!, /sysctl -w net\.mptcp\.enabled=1/);
  writeFileSync(join(procSys, 'net/mptcp/enabled'), '1\n');
  const eps: Endpoint[] = [{ ip: '192.168.7.20', dev: 'eth0', id: 1, subflow: true, backup: false }];
  const missing = await mptcpHealth(snap, procSys, fakeIp({ endpoints: eps, limits: LIMITS }).run);
  assert.equal(missing.status, 'info');
  assert.match(missing.summary, /10\.1\.1\.2 \(wlan0\)/);
  assert.match(missing.fix!, /sudo ip mptcp endpoint add 10\.1\.1\.2 dev wlan0 subflow backup/);
  const both: Endpoint[] = [...eps, { ip: '10.1.1.2', dev: 'wlan0', id: 2, subflow: true, backup: true }];
  const low = await mptcpHealth(snap, procSys, fakeIp({ endpoints: both, limits: { subflows: 1, addAddrAccepted: 0 } }).run);
  assert.match(low.fix!, /ip mptcp limits set subflow 2 add_addr_accepted 2/);
  const ok = await mptcpHealth(snap, procSys, fakeIp({ endpoints: both, limits: LIMITS }).run);
  assert.equal(ok.status, 'ok');
});

// ---------------------------------------------------------------------------------------------
// The dialer's fallback to TCP

test('dialer with mptcp and no way to make an MPTCP socket: says so once, then dials plain TCP', async (t) => {
  const { createServer } = await import('node:net');
  const { createDialer } = await import('../../src/egress/dial.js');
  const server = createServer((s) => {
    s.on('error', () => {});
    s.resume();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const why: string[] = [];
  const dialer = createDialer({ timeoutMs: 2000, keepAliveMs: 0, mptcp: true }, undefined, { onNoMptcp: (w) => why.push(w) });
  const egress = { ifname: 'lo', source: '127.0.0.1', family: 4 as const, placedBy: 'route' as const };
  for (let i = 0; i < 2; i++) {
    const s = await dialer.dial({ ip: '127.0.0.1', family: 4, port }, egress);
    assert.equal(dialer.subflowsOf?.(s), undefined, 'a plain TCP socket has no subflow probe');
    s.destroy();
  }
  assert.equal(why.length, 1, `said once: ${JSON.stringify(why)}`);
  assert.match(why[0], /addon/);
});
