// `holdfast status` output for a known state (golden): the moment after a handover, with if2 the
// best route, an old download still on if1, a new flow on if2, one flow still dialing and an
// interface without carrier. The formatter is pure: format(status, now) -> string.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { format, formatAge, formatBytes, formatRate } from '../../src/observe/format.js';
import type { StatusInterface, StatusJson } from '../../src/observe/status.js';

const NOW = 1_800_000_000_000;
const MiB = 1024 * 1024;

function iface(p: Partial<StatusInterface> & Pick<StatusInterface, 'name' | 'index'>): StatusInterface {
  return {
    up: true,
    adminUp: true,
    carrier: true,
    loopback: false,
    addresses: [],
    defaultRoute: null,
    defaultRoutes: [],
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

const known: StatusJson = {
  binder: 'device',
  now: NOW,
  startedAt: NOW - 754_000,
  best: { ipv4: 'if2', ipv6: 'if2' },
  interfaces: [
    iface({ name: 'lo', index: 1, loopback: true, addresses: ['127.0.0.1/8', '::1/128'] }),
    iface({
      name: 'if1',
      index: 2,
      addresses: ['10.1.1.2/24', 'fd01:1::2/64', 'fe80::1%if1/64'],
      defaultRoute: { family: 4, gateway: '10.1.1.1', metric: 100 },
      defaultRoutes: [
        { family: 4, gateway: '10.1.1.1', metric: 100 },
        { family: 6, gateway: 'fd01:1::1', metric: 100 },
      ],
      flows: 2,
      bytesUp: 1_234,
      bytesDown: 12 * MiB,
      bytesUpTotal: 52_345,
      bytesDownTotal: 140 * MiB,
      rateUp: 80,
      rateDown: 1.5 * MiB,
    }),
    iface({
      name: 'if2',
      index: 3,
      addresses: ['10.1.2.2/24'],
      defaultRoute: { family: 4, gateway: '10.1.2.1', metric: 50 },
      defaultRoutes: [{ family: 4, gateway: '10.1.2.1', metric: 50 }],
      best: true,
      flows: 1,
      bytesUp: 310,
      bytesDown: 3 * MiB,
      bytesUpTotal: 310,
      bytesDownTotal: 3 * MiB,
      rateUp: 0,
      rateDown: 1024 * 1024,
    }),
    // no carrier, an address left over: still shown
    iface({ name: 'wlan0', index: 4, up: false, carrier: false, addresses: ['192.168.1.23/24'] }),
    // only link-local, no route, no flows (a veth, a bridge): only named
    iface({ name: 'veth0', index: 5, addresses: ['fe80::2%veth0/64'] }),
  ],
  flows: [
    {
      id: 9,
      kind: 'http-forward',
      client: '127.0.0.1:40112',
      dst: 'fresh.example:8080',
      ip: '10.200.0.2',
      egress: 'if2',
      src: '10.1.2.2',
      placedBy: 'route',
      startedAt: NOW - 3_200,
      bytesUp: 310,
      bytesDown: 3 * MiB,
      rateUp: 0,
      rateDown: MiB,
    },
    {
      id: 7,
      kind: 'socks5-connect',
      client: '127.0.0.1:40100',
      dst: '10.200.0.1:8080',
      ip: '10.200.0.1',
      egress: 'if1',
      src: '10.1.1.2',
      placedBy: 'route',
      startedAt: NOW - 12_900,
      bytesUp: 120,
      bytesDown: 11.5 * MiB,
      rateUp: 0,
      rateDown: 1_000_000,
    },
    {
      id: 8,
      kind: 'http-connect',
      client: '127.0.0.1:40104',
      dst: 'a-very-long-host-name-that-goes-on.example.org:443',
      ip: '10.200.0.1',
      egress: 'if1',
      src: '10.1.1.2',
      placedBy: 'affinity',
      startedAt: NOW - 125_000,
      bytesUp: 1_114,
      bytesDown: 512 * 1024,
      rateUp: 80,
      rateDown: 524_288,
    },
    {
      id: 10,
      kind: 'socks5-connect',
      client: '127.0.0.1:40120',
      dst: '[fd20::1]:8080',
      ip: null,
      egress: null,
      src: null,
      placedBy: null,
      startedAt: NOW - 400,
      bytesUp: 0,
      bytesDown: 0,
      rateUp: 0,
      rateDown: 0,
    },
  ],
  totals: { opened: 10, cut: 1, live: 4 },
};

// Interfaces: best first, then usable by index, then the rest, loopback last; those without
// flows, default route or global address only named. Flows: dialing first, then grouped in the
// interface order, oldest first.
const GOLDEN = `holdfast at http://127.0.0.1:1080, up 12m34s, pinning by device
new flows go via if2; 4 live flows, 10 opened, 1 cut

INTERFACES
  NAME   STATE       BEST       ADDRESSES        DEFAULT ROUTE             FLOWS     DOWN        UP  RATE DOWN  RATE UP
  if2    up          IPv4+IPv6  10.1.2.2/24      via 10.1.2.1 metric 50        1  3.0 MiB     310 B  1.0 MiB/s    0 B/s
  if1    up          -          10.1.1.2/24      via 10.1.1.1 metric 100       2  140 MiB  51.1 KiB  1.5 MiB/s   80 B/s
                                fd01:1::2/64     via fd01:1::1 metric 100
                                +1 link-local
  wlan0  no carrier  -          192.168.1.23/24  -                             0      0 B       0 B      0 B/s    0 B/s
  idle, not shown: veth0 (up), lo (up)

FLOWS
  ID  KIND            DESTINATION                                       INTERFACE  PLACED BY    AGE      DOWN       UP  RATE DOWN  RATE UP
  10  socks5-connect  [fd20::1]:8080                                    (dialing)  -             0s       0 B      0 B      0 B/s    0 B/s
   9  http-forward    fresh.example:8080                                if2        route         3s   3.0 MiB    310 B  1.0 MiB/s    0 B/s
   8  http-connect    a-very-long-host-name-that-goes-on.example.org:…  if1        affinity   2m05s   512 KiB  1.1 KiB  512 KiB/s   80 B/s
   7  socks5-connect  10.200.0.1:8080                                   if1        route        12s  11.5 MiB    120 B  977 KiB/s    0 B/s
`;

test('holdfast status output for a known state (golden)', () => {
  assert.equal(format(known, NOW, { source: 'http://127.0.0.1:1080' }), GOLDEN);
});

test('status output is the same with colour, once the ANSI codes are taken out', () => {
  const colored = format(known, NOW, { color: true, source: 'http://127.0.0.1:1080' });
  assert.notEqual(colored, GOLDEN, 'colour adds escape codes');
  assert.match(colored, /\x1b\[1m/);
  assert.equal(colored.replace(/\x1b\[[0-9;]*m/g, ''), GOLDEN);
});

test('status output without flows or default routes says so', () => {
  const empty: StatusJson = {
    ...known,
    best: { ipv4: null, ipv6: null },
    interfaces: [known.interfaces[0]],
    flows: [],
    totals: { opened: 0, cut: 0, live: 0 },
  };
  assert.equal(
    format(empty, NOW),
    `holdfast, up 12m34s, pinning by device
no default route: only local destinations are reachable; 0 live flows, 0 opened, 0 cut

INTERFACES
  idle, not shown: lo (up)

FLOWS
  no live flows
`,
  );
});

test('maxFlows shows the first flows and counts the rest', () => {
  const out = format(known, NOW, { maxFlows: 2 });
  assert.match(out, /^ {3}9 {2}http-forward/m);
  assert.doesNotMatch(out, /^ {3}7 {2}socks5-connect/m);
  assert.match(out, /… and 2 more\n$/);
});

test('bytes, rates and ages read the same everywhere (binary units)', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(999), '999 B');
  assert.equal(formatBytes(1000), '1.0 KiB');
  assert.equal(formatBytes(1024), '1.0 KiB');
  assert.equal(formatBytes(1020 * 1024), '1.0 MiB');
  assert.equal(formatBytes(99.94 * 1024), '99.9 KiB');
  assert.equal(formatBytes(100 * 1024), '100 KiB');
  assert.equal(formatBytes(5 * 1024 ** 3), '5.0 GiB');
  assert.equal(formatBytes(-1), '-');
  assert.equal(formatBytes(Number.NaN), '-');
  assert.equal(formatRate(1536), '1.5 KiB/s');
  assert.equal(formatAge(0), '0s');
  assert.equal(formatAge(59_999), '59s');
  assert.equal(formatAge(60_000), '1m00s');
  assert.equal(formatAge(3_600_000 + 2 * 60_000), '1h02m');
  assert.equal(formatAge(26 * 3_600_000), '1d02h');
  assert.equal(formatAge(-5), '0s');
});
