// The policy-routing helper's bookkeeping, against a recorded `ip` (the real one runs in
// test/netns/policy-routing.test.ts): what a snapshot calls for, the order of commands (routes
// before rules on the way in, rules before routes on the way out), following the monitor's
// changes, leftovers of a killed run removed at start, a foreign table left alone, and close().
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DefaultRoute } from '../../src/contracts.js';
import { desiredFor, PolicyRouting, RT_PROTO, type IpRun } from '../../src/system/policy-routing.js';
import { FakeMonitor, iface, logSink, loopback, snapshot } from '../helpers/fakes.js';

const O = { tableBase: 1100, priority: 31000 };

const wlan = (gw = '10.1.1.1') =>
  iface('wlan0', { index: 3, addresses: ['10.1.1.2/24', 'fd01:1::2/64', 'fe80::1%wlan0/64'], routes: [{ family: 4, metric: 600, gateway: gw }, { family: 6, metric: 600, gateway: 'fe80::ff' }] });
const eth = () => iface('eth0', { index: 2, addresses: ['192.168.7.20/24'], routes: [{ family: 4, metric: 100, gateway: '192.168.7.1' }] });

test('desiredFor: a table per interface with a default route, on-link prefixes, a rule per address (no link-local)', () => {
  const d = desiredFor(snapshot([loopback(), wlan(), iface('docker0', { index: 9, addresses: ['172.17.0.1/16'] })]), O);
  assert.deepEqual(d.routes, [
    { family: 4, table: 1103, dst: 'default', dev: 'wlan0', via: '10.1.1.1', src: null },
    { family: 4, table: 1103, dst: '10.1.1.0/24', dev: 'wlan0', via: null, src: '10.1.1.2' },
    { family: 6, table: 1103, dst: 'default', dev: 'wlan0', via: 'fe80::ff', src: null },
    { family: 6, table: 1103, dst: 'fd01:1::/64', dev: 'wlan0', via: null, src: 'fd01:1::2' },
  ]);
  assert.deepEqual(d.rules, [
    { family: 4, src: '10.1.1.2', table: 1103, priority: 31000 },
    { family: 6, src: 'fd01:1::2', table: 1103, priority: 31000 },
  ]);
  // the main table's routes, when given, win over the snapshot's (which may list other tables)
  const main = new Map<string, DefaultRoute[]>([['wlan0', [{ family: 4, gateway: '10.1.1.254', metric: 600 }]]]);
  const m = desiredFor(snapshot([wlan()]), O, main);
  assert.deepEqual(m.routes.map((r) => `${r.family} ${r.dst} ${r.via}`), ['4 default 10.1.1.254', '4 10.1.1.0/24 null']);
});

/** A recorded `ip`: answers the queries from `state`, records every command. */
function fakeIp(state: { main: Record<string, Array<{ family: 4 | 6; gateway: string | null; metric: number }>>; leftovers?: unknown[]; foreign?: number }) {
  const calls: string[] = [];
  const run: IpRun = async (args) => {
    const line = args.join(' ');
    calls.push(line);
    if (line === '-V') return { ok: true, stdout: 'ip utility', stderr: '' };
    const m = /^-([46]) (?:-N )?-j (rule|route) show(?: table (\S+))?(?: default)?$/.exec(line);
    if (m) {
      const family = Number(m[1]);
      if (m[2] === 'rule') return { ok: true, stdout: JSON.stringify(family === 4 ? (state.leftovers ?? []) : []), stderr: '' };
      if (m[3] === 'main') {
        const out = Object.entries(state.main).flatMap(([dev, rs]) =>
          rs.filter((r) => r.family === family).map((r) => ({ dst: 'default', dev, metric: r.metric, ...(r.gateway ? { gateway: r.gateway } : {}) })),
        );
        return { ok: true, stdout: JSON.stringify(out), stderr: '' };
      }
      const foreign = state.foreign !== undefined && Number(m[3]) === state.foreign;
      return { ok: true, stdout: JSON.stringify(foreign ? [{ dst: 'default', protocol: 'boot' }] : []), stderr: '' };
    }
    return { ok: true, stdout: '', stderr: '' };
  };
  const changes = () => calls.filter((c) => / (add|del|replace|flush) /.test(c));
  return { run, calls, changes };
}

function routesOf(i: ReturnType<typeof wlan>): Array<{ family: 4 | 6; gateway: string | null; metric: number }> {
  return i.defaultRoutes.map((r) => ({ ...r }));
}

test('start installs routes then rules; a gateway change replaces the route; a lost default removes rules then routes; close removes the rest', async () => {
  const w = wlan();
  const mon = new FakeMonitor([loopback(), w]);
  const state = { main: { wlan0: routesOf(w) } as Record<string, Array<{ family: 4 | 6; gateway: string | null; metric: number }>> };
  const ip = fakeIp(state);
  const sink = logSink();
  const pr = new PolicyRouting(mon, { ...O, log: sink.log, hasNetAdmin: () => true }, ip.run);
  await pr.start();
  assert.deepEqual(ip.changes(), [
    `-4 route replace default via 10.1.1.1 dev wlan0 table 1103 proto ${RT_PROTO}`,
    `-4 route replace 10.1.1.0/24 dev wlan0 table 1103 scope link src 10.1.1.2 proto ${RT_PROTO}`,
    `-6 route replace default via fe80::ff dev wlan0 table 1103 proto ${RT_PROTO}`,
    `-6 route replace fd01:1::/64 dev wlan0 table 1103 scope link src fd01:1::2 proto ${RT_PROTO}`,
    `-4 rule add from 10.1.1.2 lookup 1103 priority 31000 protocol ${RT_PROTO}`,
    `-6 rule add from fd01:1::2 lookup 1103 priority 31000 protocol ${RT_PROTO}`,
  ]);
  assert.equal(sink.withMsg('policy routing').length, 1);

  // eth0 arrives with a better route: its table and rule are added, wlan0's stay
  ip.calls.length = 0;
  const e = eth();
  state.main.eth0 = routesOf(e);
  mon.set([loopback(), e, w]);
  await pr.idle();
  assert.deepEqual(ip.changes(), [
    `-4 route replace default via 192.168.7.1 dev eth0 table 1102 proto ${RT_PROTO}`,
    `-4 route replace 192.168.7.0/24 dev eth0 table 1102 scope link src 192.168.7.20 proto ${RT_PROTO}`,
    `-4 rule add from 192.168.7.20 lookup 1102 priority 31000 protocol ${RT_PROTO}`,
  ]);

  // wlan0's IPv4 gateway changes: one replace, nothing deleted
  ip.calls.length = 0;
  const w2 = wlan('10.1.1.254');
  state.main.wlan0 = routesOf(w2);
  mon.set([loopback(), e, w2]);
  await pr.idle();
  assert.deepEqual(ip.changes(), [`-4 route replace default via 10.1.1.254 dev wlan0 table 1103 proto ${RT_PROTO}`]);

  // wlan0 loses its default routes: rules go first, then its routes
  ip.calls.length = 0;
  const w3 = { ...w2, defaultRoutes: [] };
  delete state.main.wlan0;
  mon.set([loopback(), e, w3]);
  await pr.idle();
  assert.deepEqual(ip.changes(), [
    '-4 rule del from 10.1.1.2 lookup 1103 priority 31000',
    '-6 rule del from fd01:1::2 lookup 1103 priority 31000',
    '-4 route del default via 10.1.1.254 dev wlan0 table 1103',
    '-4 route del 10.1.1.0/24 dev wlan0 table 1103',
    '-6 route del default via fe80::ff dev wlan0 table 1103',
    '-6 route del fd01:1::/64 dev wlan0 table 1103',
  ]);

  // close: eth0's rule, then its routes; the monitor is no longer followed
  ip.calls.length = 0;
  await pr.close();
  assert.deepEqual(ip.changes(), [
    '-4 rule del from 192.168.7.20 lookup 1102 priority 31000',
    '-4 route del default via 192.168.7.1 dev eth0 table 1102',
    '-4 route del 192.168.7.0/24 dev eth0 table 1102',
  ]);
  assert.equal(mon.listeners, 0);
  await pr.close(); // idempotent
  assert.deepEqual(pr.installed(), { rules: [], routes: [] });
});

test('start removes the rules a killed run left (marked with its protocol) and flushes their tables', async () => {
  const w = wlan();
  const ip = fakeIp({ main: { wlan0: routesOf(w) }, leftovers: [{ priority: 31000, src: '10.9.9.9', table: '1107', protocol: RT_PROTO }, { priority: 100, src: '10.0.0.5', table: '50', protocol: 'boot' }] });
  const sink = logSink();
  const pr = new PolicyRouting(new FakeMonitor([w]), { ...O, log: sink.log, hasNetAdmin: () => true }, ip.run);
  await pr.start();
  const changes = ip.changes();
  assert.equal(changes[0], '-4 rule del from 10.9.9.9 lookup 1107 priority 31000');
  assert.equal(changes[1], `-4 route flush table 1107 proto ${RT_PROTO}`);
  assert.ok(!changes.some((c) => c.includes('10.0.0.5')), 'a rule someone else added is left alone');
  assert.equal(sink.withMsg('policy routing: removed leftovers of an earlier run').length, 1);
  await pr.close();
});

test('a table that holds routes holdfast did not add is left alone, with an error naming tableBase', async () => {
  const w = wlan();
  const ip = fakeIp({ main: { wlan0: routesOf(w) }, foreign: 1103 });
  const sink = logSink();
  const pr = new PolicyRouting(new FakeMonitor([w]), { ...O, log: sink.log, hasNetAdmin: () => true }, ip.run);
  await pr.start();
  assert.deepEqual(ip.changes(), []);
  assert.match(String(sink.lines.find((l) => l.level === 50)?.msg), /table holds routes holdfast did not add.*policyRouting\.tableBase/);
  await pr.close();
});

test('without CAP_NET_ADMIN start refuses, naming the capability and how to grant it', async () => {
  const ip = fakeIp({ main: {} });
  const pr = new PolicyRouting(new FakeMonitor([]), { ...O, log: logSink().log, hasNetAdmin: () => false }, ip.run);
  await assert.rejects(pr.start(), (e: Error) => e.name === 'PolicyRoutingError' && /CAP_NET_ADMIN/.test(e.message) && /setcap cap_net_admin\+ep/.test(e.message));
  assert.deepEqual(ip.calls, [], 'no ip command ran');
});

test('a first sync that fails makes start reject, after removing what it had added', async () => {
  const w = wlan();
  const ip = fakeIp({ main: { wlan0: routesOf(w) } });
  const run: IpRun = async (args) => {
    const r = await ip.run(args);
    return args.join(' ').startsWith('-6 rule add') ? { ok: false, stdout: '', stderr: 'RTNETLINK answers: Operation not supported' } : r;
  };
  const mon = new FakeMonitor([w]);
  const pr = new PolicyRouting(mon, { ...O, log: logSink().log, hasNetAdmin: () => true }, run);
  await assert.rejects(pr.start(), /could not set up the routing rules: ip -6 rule add from fd01:1::2 .*Operation not supported/);
  const changes = ip.changes();
  assert.ok(changes.includes('-4 rule del from 10.1.1.2 lookup 1103 priority 31000'), 'the IPv4 rule it had added is removed');
  assert.ok(changes.includes('-4 route del default via 10.1.1.1 dev wlan0 table 1103'));
  assert.equal(mon.listeners, 0, 'not following the monitor');
  assert.deepEqual(pr.installed(), { rules: [], routes: [] });
});
