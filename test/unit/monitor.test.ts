// The network monitor's pure parts (diffSnapshots, bestDefault, interfaceOf, usable) and the
// Monitor over a fake reader: onChange fires only for real differences, with prev/next/diff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NetDiff, NetInterface, NetSnapshot } from '../../src/contracts.js';
import { Monitor, bestDefault, diffSnapshots, interfaceOf, usable } from '../../src/net/monitor.js';
import { FakeReader, flush, iface, loopback, snapshot, withIface } from '../helpers/fakes.js';

const if1 = (patch: Partial<NetInterface> = {}) =>
  withIface(
    iface('if1', {
      index: 2,
      addresses: ['10.0.1.2/24', 'fd00:1::2/64', 'fe80::1%if1/64'],
      routes: [
        { family: 4, metric: 100, gateway: '10.0.1.1' },
        { family: 6, metric: 300, gateway: 'fe80::ff' },
      ],
    }),
    patch,
  );
const if2 = (patch: Partial<NetInterface> = {}) =>
  withIface(
    iface('if2', {
      index: 3,
      addresses: ['10.0.2.2/24', 'fd00:2::2/64', 'fe80::2%if2/64'],
      routes: [
        { family: 4, metric: 200, gateway: '10.0.2.1' },
        { family: 6, metric: 100, gateway: 'fe80::fe' },
      ],
    }),
    patch,
  );
const base = () => [loopback(), if1(), if2()];
const diff = (a: NetInterface[], b: NetInterface[]) => diffSnapshots(snapshot(a, 1), snapshot(b, 2));
const sorted = (d: NetDiff) => ({ changed: [...d.changed].sort(), routes: d.routes });

// ---------------------------------------------------------------------------------------------
// diffSnapshots

test('diffSnapshots: nothing changed gives an empty diff', () => {
  assert.deepEqual(diff(base(), base()), { changed: [], routes: false });
});

test('diffSnapshots: an address added or removed changes that interface only', () => {
  const added = if1({ addresses: [...if1().addresses, { ip: '10.0.1.9', family: 4, prefixLen: 24 }] });
  assert.deepEqual(diff(base(), [loopback(), added, if2()]), { changed: ['if1'], routes: false });
  const removed = if2({ addresses: if2().addresses.filter((a) => a.family !== 6 || a.ip.startsWith('fe80')) });
  assert.deepEqual(diff(base(), [loopback(), if1(), removed]), { changed: ['if2'], routes: false });
});

test('diffSnapshots: a changed prefix length is a change', () => {
  const p = if1({ addresses: if1().addresses.map((a) => (a.ip === '10.0.1.2' ? { ...a, prefixLen: 16 } : a)) });
  assert.deepEqual(diff(base(), [loopback(), p, if2()]), { changed: ['if1'], routes: false });
});

test('diffSnapshots: carrier or up changes are changes', () => {
  assert.deepEqual(diff(base(), [loopback(), if1({ carrier: false }), if2()]), { changed: ['if1'], routes: false });
  assert.deepEqual(diff(base(), [loopback(), if1(), if2({ up: false })]), { changed: ['if2'], routes: false });
});

test('diffSnapshots: a new index (interface re-created) is a change', () => {
  assert.deepEqual(diff(base(), [loopback(), if1({ index: 42 }), if2()]), { changed: ['if1'], routes: false });
});

test('diffSnapshots: a route metric change sets routes, and changes no interface', () => {
  const moved = if2({ defaultRoutes: [{ family: 4, gateway: '10.0.2.1', metric: 50 }, if2().defaultRoutes[1]] });
  assert.deepEqual(diff(base(), [loopback(), if1(), moved]), { changed: [], routes: true });
});

test('diffSnapshots: a default route added, removed or re-gatewayed sets routes', () => {
  assert.deepEqual(diff(base(), [loopback(), if1({ defaultRoutes: [] }), if2()]), { changed: [], routes: true });
  const extra = if1({ defaultRoutes: [...if1().defaultRoutes, { family: 4, gateway: '10.0.1.254', metric: 900 }] });
  assert.deepEqual(diff(base(), [loopback(), extra, if2()]), { changed: [], routes: true });
  const gw = if1({ defaultRoutes: [{ family: 4, gateway: '10.0.1.254', metric: 100 }, if1().defaultRoutes[1]] });
  assert.deepEqual(diff(base(), [loopback(), gw, if2()]), { changed: [], routes: true });
});

test('diffSnapshots: an interface that appears or goes away is changed; routes only if it had a default', () => {
  const if3 = iface('if3', { addresses: ['10.0.3.2/24'] });
  assert.deepEqual(diff(base(), [...base(), if3]), { changed: ['if3'], routes: false });
  assert.deepEqual(diff([...base(), if3], base()), { changed: ['if3'], routes: false });
  assert.deepEqual(sorted(diff(base(), [loopback(), if2()])), { changed: ['if1'], routes: true });
  const if4 = iface('if4', { addresses: ['10.0.4.2/24'], routes: [{ family: 4, metric: 5 }] });
  assert.deepEqual(diff(base(), [...base(), if4]), { changed: ['if4'], routes: true });
});

test('diffSnapshots: several changes at once are all reported', () => {
  const d = diff(base(), [loopback(), if1({ carrier: false }), if2({ addresses: [] })]);
  assert.deepEqual(sorted(d), { changed: ['if1', 'if2'], routes: false });
});

// ---------------------------------------------------------------------------------------------
// Monitor over a fake reader

function monitorOn(t: { after(fn: () => void): void }, interfaces: NetInterface[]) {
  const reader = new FakeReader(interfaces);
  const monitor = new Monitor({ reader, watch: false, pollMs: 0 });
  t.after(() => monitor.close());
  const events: { prev: NetSnapshot; next: NetSnapshot; diff: NetDiff }[] = [];
  monitor.onChange((prev, next, d) => events.push({ prev, next, diff: d }));
  return { reader, monitor, events };
}

test('Monitor: the first snapshot is what the reader saw, frozen', (t) => {
  const { monitor, reader } = monitorOn(t, base());
  const s = monitor.current();
  assert.equal(reader.reads, 1);
  assert.equal(s.generation, 1);
  assert.deepEqual(
    s.interfaces.map((i) => i.name),
    ['lo', 'if1', 'if2'],
  );
  assert.ok(Object.isFrozen(s));
  assert.ok(Object.isFrozen(s.interfaces));
  assert.ok(Object.isFrozen(s.interfaces[1]));
  assert.ok(Object.isFrozen(s.interfaces[1].addresses));
});

test('Monitor: re-reading the same state announces nothing and keeps the snapshot', (t) => {
  const { monitor, events, reader } = monitorOn(t, base());
  const before = monitor.current();
  assert.equal(monitor.readNow(), before);
  assert.equal(monitor.readNow(), before);
  assert.equal(reader.reads, 3);
  assert.equal(events.length, 0);
});

test('Monitor: a real difference fires onChange once, with prev, next and the diff', async (t) => {
  const { monitor, events, reader } = monitorOn(t, base());
  const prev = monitor.current();
  reader.set([loopback(), if1({ carrier: false }), if2()]);
  const next = monitor.readNow();
  await flush();
  assert.equal(events.length, 1);
  assert.equal(events[0].prev, prev);
  assert.equal(events[0].next, next);
  assert.equal(monitor.current(), next);
  assert.equal(next.generation, prev.generation + 1);
  assert.deepEqual(events[0].diff, { changed: ['if1'], routes: false });
  assert.equal(next.interfaces.find((i) => i.name === 'if1')?.carrier, false);
  monitor.readNow();
  await flush();
  assert.equal(events.length, 1, 'the same state again is not a change');
});

test('Monitor: a route-only change fires onChange with routes true', async (t) => {
  const { monitor, events, reader } = monitorOn(t, base());
  reader.set([loopback(), if1({ defaultRoutes: [] }), if2()]);
  const next = monitor.readNow();
  await flush();
  assert.equal(events.length, 1);
  assert.deepEqual(events[0].diff, { changed: [], routes: true });
  assert.equal(monitor.current(), next);
});

test('Monitor: a reader that throws keeps the last good snapshot and announces nothing', async (t) => {
  const { monitor, events, reader } = monitorOn(t, base());
  const before = monitor.current();
  reader.fail = new Error('EIO');
  reader.set([loopback()]);
  assert.equal(monitor.readNow(), before);
  await flush();
  assert.equal(events.length, 0);
  reader.fail = undefined;
  monitor.readNow();
  await flush();
  assert.equal(events.length, 1);
});

test('Monitor: unsubscribe and close stop the announcements', async (t) => {
  const { monitor, reader } = monitorOn(t, base());
  const seen: number[] = [];
  const off = monitor.onChange((_p, n) => seen.push(n.generation));
  reader.set([loopback(), if1({ carrier: false }), if2()]);
  monitor.readNow();
  await flush();
  off();
  reader.set(base());
  monitor.readNow();
  await flush();
  assert.deepEqual(seen, [2]);
  monitor.close();
  reader.set([loopback()]);
  monitor.readNow();
  assert.equal(monitor.current().generation, 3, 'a closed monitor reads no more');
});

test('13: listeners never run inside the caller of readNow; two changes arrive later, in order', async (t) => {
  const { monitor, events, reader } = monitorOn(t, base());
  let inside = true;
  const during: boolean[] = [];
  monitor.onChange(() => during.push(inside));
  reader.set([loopback(), if1({ carrier: false }), if2()]);
  const a = monitor.readNow();
  reader.set([loopback(), if1({ carrier: false, defaultRoutes: [] }), if2()]);
  const b = monitor.readNow();
  assert.equal(b.generation, a.generation + 1, 'the snapshot is fresh at once');
  assert.equal(events.length, 0, 'nobody heard of it inside the call');
  inside = false;
  await flush();
  assert.deepEqual(during, [false, false]);
  assert.deepEqual(events.map((e) => e.next), [a, b]);
});

test('13: the monitor owns its probing: watchClosely re-reads on its own timer until every hold is released', async (t) => {
  const reader = new FakeReader(base());
  const monitor = new Monitor({ reader, watch: false, pollMs: 0, probeMs: 5 });
  t.after(() => monitor.close());
  assert.equal(monitor.probing, false);
  const r1 = monitor.watchClosely();
  const r2 = monitor.watchClosely();
  assert.equal(monitor.probing, true);
  // a carrier loss that no event reports is seen by the probe alone
  const seen = new Promise<NetSnapshot>((resolve) => monitor.onChange((_p, n) => resolve(n)));
  reader.set([loopback(), if1({ carrier: false }), if2()]);
  // the probe's own timer is unref'd (it must not keep holdfast alive): this ref'd deadline keeps
  // the test's event loop running until the probe has fired, and is cleared right after
  let deadline: NodeJS.Timeout | undefined;
  const next = await Promise.race([seen, new Promise<undefined>((r) => (deadline = setTimeout(() => r(undefined), 5000)))]);
  clearTimeout(deadline);
  assert.ok(next, 'the probe saw the change within 5 s');
  assert.equal(next.interfaces.find((i) => i.name === 'if1')?.carrier, false);
  r1();
  r1();
  assert.equal(monitor.probing, true, 'one hold is left (a repeated release counts once)');
  r2();
  assert.equal(monitor.probing, false);
  // the timer itself stops at its next tick without a hold (a hold taken again before that keeps
  // it): no read after that
  const again = monitor.watchClosely();
  assert.equal(monitor.probing, true);
  again();
  await new Promise((r) => setTimeout(r, 30));
  const reads = reader.reads;
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(reader.reads, reads, 'no probe read once every hold is released');
});

// ---------------------------------------------------------------------------------------------
// bestDefault, interfaceOf, usable

test('bestDefault: lowest metric per family, among interfaces up with carrier', () => {
  const s = snapshot(base());
  assert.deepEqual(bestDefault(s, 4), { ifname: 'if1', metric: 100 });
  assert.deepEqual(bestDefault(s, 6), { ifname: 'if2', metric: 100 });
  assert.deepEqual(bestDefault(snapshot([loopback(), if1({ carrier: false }), if2()]), 4), { ifname: 'if2', metric: 200 });
  assert.deepEqual(bestDefault(snapshot([loopback(), if1({ up: false }), if2()]), 4), { ifname: 'if2', metric: 200 });
  assert.equal(bestDefault(snapshot([loopback()]), 4), undefined);
  assert.equal(bestDefault(snapshot([loopback(), if1({ defaultRoutes: [] })]), 6), undefined);
});

test('interfaceOf: by address, and by the %ifname of a link-local address', () => {
  const s = snapshot(base());
  assert.equal(interfaceOf(s, '10.0.1.2')?.name, 'if1');
  assert.equal(interfaceOf(s, 'fd00:2::2')?.name, 'if2');
  assert.equal(interfaceOf(s, '127.0.0.1')?.name, 'lo');
  assert.equal(interfaceOf(s, 'fe80::1%if1')?.name, 'if1');
  assert.equal(interfaceOf(s, 'fe80::1%if2')?.name, 'if2', 'the zone names the interface');
  assert.equal(interfaceOf(s, 'fe80::9%if9'), undefined);
  assert.equal(interfaceOf(s, '10.9.9.9'), undefined);
});

test('usable: up, carrier and an address of the family', () => {
  assert.equal(usable(if1(), 4), true);
  assert.equal(usable(if1(), 6), true);
  assert.equal(usable(if1({ carrier: false }), 4), false);
  assert.equal(usable(if1({ up: false }), 4), false);
  const v4only = if1({ addresses: if1().addresses.filter((a) => a.family === 4) });
  assert.equal(usable(v4only, 4), true);
  assert.equal(usable(v4only, 6), false);
});
