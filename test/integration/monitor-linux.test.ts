// The Linux monitor against the real kernel, inside the loopback-only test namespace: a veth pair
// of our own, routes in the main table and in a policy table.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { createLinuxReader } from '../../src/net/monitor-linux.js';
import { Monitor } from '../../src/net/monitor.js';
import { cachedSourceFinder, createSourceFinder } from '../../src/net/route.js';
import { sandboxSkip } from '../helpers/sandbox.js';

const skip = sandboxSkip();

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

test('default routes: the main table counts, a policy table does not (IPv4 and IPv6)', { skip }, async (t) => {
  ip('link', 'add', 'hfmon0', 'type', 'veth', 'peer', 'name', 'hfmon1');
  t.after(() => ip('link', 'del', 'hfmon0'));
  ip('addr', 'add', '192.0.2.10/24', 'dev', 'hfmon0');
  ip('addr', 'add', 'fd7e::10/64', 'dev', 'hfmon0', 'nodad');
  ip('link', 'set', 'hfmon0', 'up');
  ip('link', 'set', 'hfmon1', 'up');
  const reader = createLinuxReader();
  const routesOf = () => reader.read().find((i) => i.name === 'hfmon0')!.defaultRoutes;

  // only in a policy table: not a default route of the host
  ip('route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'hfmon0', 'table', '4242');
  ip('-6', 'route', 'add', 'default', 'via', 'fd7e::1', 'dev', 'hfmon0', 'table', '4242');
  t.after(() => {
    ip('route', 'flush', 'table', '4242');
    ip('-6', 'route', 'flush', 'table', '4242');
  });
  assert.deepEqual(routesOf(), []);

  // in the main table: it is
  ip('route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'hfmon0', 'metric', '77');
  ip('-6', 'route', 'add', 'default', 'via', 'fd7e::1', 'dev', 'hfmon0', 'metric', '78');
  assert.deepEqual(routesOf(), [
    { family: 4, gateway: '192.0.2.1', metric: 77 },
    { family: 6, gateway: 'fd7e::1', metric: 78 },
  ]);
});

test('the monitor announces a carrier loss and an address change, once each', { skip }, async (t) => {
  ip('link', 'add', 'hfmon2', 'type', 'veth', 'peer', 'name', 'hfmon3');
  t.after(() => ip('link', 'del', 'hfmon2'));
  ip('addr', 'add', '198.51.100.10/24', 'dev', 'hfmon2');
  ip('link', 'set', 'hfmon2', 'up');
  ip('link', 'set', 'hfmon3', 'up');
  const monitor = new Monitor({ pollMs: 0 });
  t.after(() => monitor.close());
  const carrierOf = () => monitor.current().interfaces.find((i) => i.name === 'hfmon2')?.carrier;
  // carrier comes up asynchronously: re-read until it shows (kernel state: poll with a deadline)
  const until = async (pred: () => boolean, what: string) => {
    const deadline = Date.now() + 5000;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      monitor.readNow();
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until(() => carrierOf() === true, 'carrier up');
  // from here on nothing calls readNow(): the kernel's netlink messages alone must bring each
  // change (issue 12: the old test re-read the state itself, so netlink was never exercised)
  type Seen = { address: boolean; carrierLost: boolean; barrier: boolean };
  const seen: Seen[] = [];
  const waiters: { pred: (s: Seen) => boolean; resolve: () => void }[] = [];
  monitor.onChange((prev, next, diff) => {
    const before = prev.interfaces.find((i) => i.name === 'hfmon2');
    const after = next.interfaces.find((i) => i.name === 'hfmon2');
    const has = (i: typeof after, ip: string) => !!i?.addresses.some((a) => a.ip === ip);
    const hasOn = (snap: typeof prev, name: string, ip: string) => has(snap.interfaces.find((i) => i.name === name), ip);
    const s: Seen = {
      address: diff.changed.includes('hfmon2') && !has(before, '198.51.100.11') && has(after, '198.51.100.11'),
      carrierLost: before?.carrier === true && after?.carrier === false,
      barrier: !hasOn(prev, 'hfmon4', '203.0.113.4') && hasOn(next, 'hfmon4', '203.0.113.4'),
    };
    seen.push(s);
    for (const w of waiters.splice(0)) if (w.pred(s)) w.resolve();
      else waiters.push(w);
  });
  const announced = (pred: (s: Seen) => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      if (seen.some(pred)) return resolve();
      const timer = setTimeout(() => reject(new Error(`the monitor announced no ${what} within 5 s: ${JSON.stringify(seen)}`)), 5000);
      waiters.push({ pred, resolve: () => (clearTimeout(timer), resolve()) });
    });
  ip('addr', 'add', '198.51.100.11/24', 'dev', 'hfmon2');
  await announced((s) => s.address, 'new address');
  ip('link', 'set', 'hfmon3', 'down'); // the peer goes down: hfmon2 loses carrier
  await announced((s) => s.carrierLost, 'carrier loss');
  // a last change elsewhere: announcements come in order, so any repeat of the two above came before it
  ip('link', 'add', 'hfmon4', 'type', 'veth', 'peer', 'name', 'hfmon5');
  t.after(() => ip('link', 'del', 'hfmon4'));
  ip('addr', 'add', '203.0.113.4/24', 'dev', 'hfmon4');
  ip('link', 'set', 'hfmon4', 'up');
  ip('link', 'set', 'hfmon5', 'up');
  await announced((s) => s.barrier, 'address on a new link');
  assert.equal(seen.filter((s) => s.address).length, 1, `the address announced once: ${JSON.stringify(seen)}`);
  assert.equal(seen.filter((s) => s.carrierLost).length, 1, `the carrier loss announced once: ${JSON.stringify(seen)}`);
  // nothing changed since: a re-read announces nothing
  const before = seen.length;
  monitor.readNow();
  assert.equal(seen.length, before);
});

test('the epoch moves at once on a route or rule event the snapshot does not show, and a cached route choice follows it', { skip }, async (t) => {
  ip('link', 'add', 'hfmon6', 'type', 'veth', 'peer', 'name', 'hfmon7');
  t.after(() => ip('link', 'del', 'hfmon6'));
  ip('link', 'add', 'hfmon8', 'type', 'veth', 'peer', 'name', 'hfmon9');
  t.after(() => ip('link', 'del', 'hfmon8'));
  ip('addr', 'add', '192.0.2.60/24', 'dev', 'hfmon6');
  ip('addr', 'add', '198.51.100.80/24', 'dev', 'hfmon8');
  for (const l of ['hfmon6', 'hfmon7', 'hfmon8', 'hfmon9']) ip('link', 'set', l, 'up');
  // debounce far away: the epoch must move on the event itself, not on the re-read after it
  const monitor = new Monitor({ pollMs: 0, probeMs: 0, debounceMs: 60_000 });
  t.after(() => monitor.close());
  const waitFor = async (pred: () => boolean, what: string, nudge?: () => void) => {
    const deadline = Date.now() + 5000;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      nudge?.();
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  /** the links' own late events (IPv6 link-local addresses and routes) must not pass for ours */
  const quiet = async () => {
    const deadline = Date.now() + 10_000;
    for (let e = monitor.epoch; ; ) {
      await new Promise((r) => setTimeout(r, 400));
      if (monitor.epoch === e) return;
      if (Date.now() > deadline) throw new Error('the links never went quiet');
      e = monitor.epoch;
    }
  };
  await waitFor(() => monitor.epoch !== undefined, 'ip monitor to run');
  // `ip` subscribes a moment after it starts: nudge with an address change until one is heard
  let n = 0;
  const first = monitor.epoch!;
  await waitFor(() => monitor.epoch !== first, 'a first event', () => ip('addr', 'replace', `192.0.2.${100 + (n++ % 50)}/32`, 'dev', 'hfmon6'));

  const inner = createSourceFinder(undefined); // the UDP probe (the addon's does the same in C)
  let probes = 0;
  const find = cachedSourceFinder((f, a) => (probes++, inner(f, a)), { epoch: () => monitor.epoch, maxAgeMs: 60_000 });
  await quiet();
  ip('route', 'add', '203.0.113.0/24', 'dev', 'hfmon6');
  t.after(() => ip('route', 'flush', '203.0.113.0/24'));
  const snap = monitor.current();
  let e = monitor.epoch!;
  await waitFor(() => monitor.epoch !== e, 'the route event');
  assert.equal(monitor.current(), snap, 'a specific route is no change of the snapshot (no re-read yet either)');
  assert.equal(await find(4, '203.0.113.7'), '192.0.2.60');
  assert.equal(await find(4, '203.0.113.7'), '192.0.2.60');
  assert.equal(probes, 1, 'cached while nothing was heard');

  await quiet();
  e = monitor.epoch!;
  ip('route', 'replace', '203.0.113.0/24', 'dev', 'hfmon8');
  await waitFor(() => monitor.epoch !== e, 'the route replacement');
  assert.equal(await find(4, '203.0.113.7'), '198.51.100.80', 'the new route, not the cached answer');
  assert.equal(probes, 2);

  // a policy rule (VPN clients add these) is heard too
  await quiet();
  e = monitor.epoch!;
  ip('rule', 'add', 'to', '203.0.113.0/24', 'lookup', '4243', 'priority', '4243');
  t.after(() => ip('rule', 'del', 'priority', '4243'));
  await waitFor(() => monitor.epoch !== e, 'the rule event');
});

test("the close watch's cheap look: quiet while nothing changed, true on a carrier loss or a link gone; its files closed at the end", { skip }, async (t) => {
  ip('link', 'add', 'hfmon10', 'type', 'veth', 'peer', 'name', 'hfmon11');
  t.after(() => {
    try {
      ip('link', 'del', 'hfmon10');
    } catch {
      /* deleted by the test */
    }
  });
  ip('addr', 'add', '192.0.2.110/24', 'dev', 'hfmon10');
  ip('link', 'set', 'hfmon10', 'up');
  ip('link', 'set', 'hfmon11', 'up');
  const reader = createLinuxReader();
  const fds = () => readdirSync('/proc/self/fd').length;
  const before = fds();
  const snapshot = () => ({ generation: 1, takenAt: Date.now(), interfaces: reader.read() });
  // carrier comes up asynchronously: read until it shows (kernel state: poll with a deadline)
  const deadline = Date.now() + 5000;
  let snap = snapshot();
  while (!snap.interfaces.find((i) => i.name === 'hfmon10')?.carrier) {
    if (Date.now() > deadline) throw new Error('hfmon10 never got carrier');
    await new Promise((r) => setTimeout(r, 20));
    snap = snapshot();
  }
  assert.equal(reader.linksChanged!(snap), false, 'nothing changed');
  assert.equal(reader.linksChanged!(snap), false, 'and again, on the files kept open');
  assert.ok(fds() > before, 'the flags and carrier files are kept open');
  ip('link', 'set', 'hfmon11', 'down'); // the peer goes down: hfmon10 loses carrier at once in sysfs
  assert.equal(reader.linksChanged!(snap), true, 'the carrier loss is seen');
  snap = snapshot();
  assert.equal(snap.interfaces.find((i) => i.name === 'hfmon10')?.carrier, false);
  assert.equal(reader.linksChanged!(snap), false, 'the new state is quiet again');
  const oldIndex = snap.interfaces.find((i) => i.name === 'hfmon10')!.index;
  ip('link', 'del', 'hfmon10');
  assert.equal(reader.linksChanged!(snap), true, 'a link gone is seen through its open files');
  // another link under the same name: the files kept for the old one fail, and are opened anew
  ip('link', 'add', 'hfmon10', 'type', 'veth', 'peer', 'name', 'hfmon11');
  ip('link', 'set', 'hfmon10', 'up');
  const again = reader.read().find((i) => i.name === 'hfmon10');
  assert.ok(again, 'the new hfmon10 is read');
  assert.notEqual(again.index, oldIndex, 'with its own index, not the old link\'s');
  assert.equal(again.up, true);
  // renamed, and another link made under its old name (as udev does with eth0): the files kept
  // under the old name now belong to the renamed link, and must not be read for the new one
  const upIndex = again.index;
  ip('link', 'set', 'hfmon10', 'name', 'hfmon12');
  ip('link', 'add', 'hfmon10', 'type', 'veth', 'peer', 'name', 'hfmon13');
  t.after(() => {
    try {
      ip('link', 'del', 'hfmon12');
    } catch {
      /* deleted by the test */
    }
  });
  const read = reader.read();
  const fresh = read.find((i) => i.name === 'hfmon10');
  const renamed = read.find((i) => i.name === 'hfmon12');
  assert.ok(fresh && renamed);
  assert.equal(renamed.index, upIndex, 'the renamed link keeps its index');
  assert.notEqual(fresh.index, upIndex, 'the new hfmon10 is read as itself, not as the renamed link');
  assert.equal(fresh.up, false, 'and it is down (the renamed one is up)');
  assert.equal(renamed.up, true);
  ip('link', 'del', 'hfmon10');
  ip('link', 'del', 'hfmon12');
  assert.equal(reader.read().some((i) => i.name === 'hfmon10' || i.name === 'hfmon12'), false);
  reader.close!();
  assert.equal(fds(), before, 'close() closes what the look kept open');
});
