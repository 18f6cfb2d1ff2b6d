// The Linux monitor against the real kernel, inside the loopback-only test namespace: a veth pair
// of our own, routes in the main table and in a policy table.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { createLinuxReader } from '../../src/net/monitor-linux.js';
import { Monitor } from '../../src/net/monitor.js';
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
  const changes: string[][] = [];
  monitor.onChange((_p, _n, diff) => changes.push([...diff.changed]));
  ip('addr', 'add', '198.51.100.11/24', 'dev', 'hfmon2');
  await until(
    () => !!monitor.current().interfaces.find((i) => i.name === 'hfmon2')?.addresses.some((a) => a.ip === '198.51.100.11'),
    'the new address',
  );
  ip('link', 'set', 'hfmon3', 'down'); // the peer goes down: hfmon2 loses carrier
  await until(() => carrierOf() === false, 'carrier loss');
  assert.ok(changes.length >= 2, `changes: ${JSON.stringify(changes)}`);
  assert.ok(changes.every((c) => c.includes('hfmon2')));
  // nothing changed since: a re-read announces nothing
  const before = changes.length;
  monitor.readNow();
  assert.equal(changes.length, before);
});
