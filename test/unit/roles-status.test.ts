// Issue 15: `holdfast status` shows each interface's type, metered state and role when /status
// has them, and leaves its table as it was for a holdfast that does not send them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { format } from '../../src/observe/format.js';
import type { StatusInterface, StatusJson } from '../../src/observe/status.js';

const NOW = 1_800_000_000_000;

function iface(p: Partial<StatusInterface> & Pick<StatusInterface, 'name' | 'index'>): StatusInterface {
  return {
    up: true,
    adminUp: true,
    carrier: true,
    loopback: false,
    addresses: [],
    defaultRoute: null,
    defaultRoutes: [{ family: 4, gateway: '10.0.0.1', metric: 100 }],
    best: false,
    flows: 0,
    bytesUp: 0,
    bytesDown: 0,
    bytesUpTotal: 0,
    bytesDownTotal: 0,
    rateUp: 0,
    rateDown: 0,
    ...p,
  };
}

function status(interfaces: StatusInterface[]): StatusJson {
  return { binder: 'device', now: NOW, startedAt: NOW - 1000, best: { ipv4: 'wwan0', ipv6: null }, interfaces, flows: [], totals: { opened: 0, cut: 0, live: 0 } };
}

test('15: holdfast status shows TYPE (with metered) and ROLE columns', () => {
  const text = format(
    status([
      iface({ name: 'wwan0', index: 2, addresses: ['10.0.9.2/24'], type: 'cellular', metered: true, role: 'backup', roleBy: 'type' }),
      iface({ name: 'wlan0', index: 3, addresses: ['10.0.1.2/24'], type: 'wifi', metered: false, role: 'normal', roleBy: 'default' }),
    ]),
    NOW,
  );
  assert.match(text, /NAME\s+STATE\s+TYPE\s+ROLE\s+BEST/);
  assert.match(text, /wwan0\s+up\s+cellular, metered\s+backup\s+IPv4/);
  assert.match(text, /wlan0\s+up\s+wifi\s+normal\s+-/);
});

test('15: without type and role in /status the table has no such columns', () => {
  const text = format(status([iface({ name: 'eth0', index: 2, addresses: ['10.0.1.2/24'] })]), NOW);
  assert.doesNotMatch(text, /TYPE|ROLE/);
  assert.match(text, /NAME\s+STATE\s+BEST/);
});
