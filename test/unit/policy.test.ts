// The egress policy on a fake snapshot: the kernel's choice leads, unusable interfaces never take
// new flows, fallbacks follow by metric, affinity joins live (and lingering) destinations, a
// failed interface sits out its back-off, and "nowhere to go" is an error with a stable code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Destination, Egress, NetInterface, Target } from '../../src/contracts.js';
import { HoldfastError } from '../../src/errors.js';
import { Policy, type PolicyOptions } from '../../src/egress/policy.js';
import { Monitor } from '../../src/net/monitor.js';
import type { SourceFinder } from '../../src/net/route.js';
import { FakeClock, FakeMonitor, FakeReader, iface, loopback, withIface } from '../helpers/fakes.js';

// ---------------------------------------------------------------------------------------------
// Fixture: lo, if1 (metric 100) and if2 (metric 200), both dual stack with default routes.

const IF1_V4 = '10.0.1.2';
const IF2_V4 = '10.0.2.2';
const IF1_V6 = 'fd00:1::2';
const IF2_V6 = 'fd00:2::2';

function if1(spec: Partial<NetInterface> = {}): NetInterface {
  const base = iface('if1', {
    index: 2,
    addresses: [`${IF1_V4}/24`, `${IF1_V6}/64`],
    routes: [
      { family: 4, metric: 100, gateway: '10.0.1.1' },
      { family: 6, metric: 100, gateway: 'fd00:1::1' },
    ],
  });
  return withIface(base, spec);
}

function if2(spec: Partial<NetInterface> = {}): NetInterface {
  const base = iface('if2', {
    index: 3,
    addresses: [`${IF2_V4}/24`, `${IF2_V6}/64`],
    routes: [
      { family: 4, metric: 200, gateway: '10.0.2.1' },
      { family: 6, metric: 200, gateway: 'fd00:2::1' },
    ],
  });
  return withIface(base, spec);
}

/** A SourceFinder whose answer the test sets: a source address, or an OS error code. */
class Kernel {
  answer: { source: string } | { error: string } = { source: IF1_V4 };
  calls: { family: 4 | 6; ip: string }[] = [];
  readonly find: SourceFinder = (family, ip) => {
    this.calls.push({ family, ip });
    const a = this.answer;
    if ('error' in a) throw Object.assign(new Error(`connect ${a.error} ${ip}`), { code: a.error });
    return a.source;
  };
  routesVia(source: string): void {
    this.answer = { source };
  }
  fails(code: string): void {
    this.answer = { error: code };
  }
}

const LINGER = 30_000;
const BACKOFF = 5_000;

function setup(
  interfaces: NetInterface[] = [loopback(), if1(), if2()],
  affinity: PolicyOptions['affinity'] = { mode: 'host', lingerMs: LINGER },
) {
  const monitor = new FakeMonitor(interfaces);
  const kernel = new Kernel();
  const clock = new FakeClock();
  const policy = new Policy(monitor, kernel.find, { affinity, backoffMs: BACKOFF }, clock);
  return { monitor, kernel, clock, policy };
}

const v4: Target = { ip: '93.184.216.34', family: 4, port: 443 };
const v4b: Target = { ip: '93.184.216.35', family: 4, port: 443 };
const v6: Target = { ip: '2606:2800:220:1::1', family: 6, port: 443 };
const named = (host: string, port = 443): Destination => ({ host, port, isName: true });
const literal = (t: Target): Destination => ({ host: t.ip, port: t.port, isName: false });

/** "if1/route" style, compact to compare and readable when it fails. */
const brief = (es: readonly Egress[]) => es.map((e) => `${e.ifname}/${e.placedBy}`);

// ---------------------------------------------------------------------------------------------
// The kernel's choice, usability, fallback order

test("the kernel's choice leads (placedBy 'route'), other usable interfaces follow as 'fallback'", async () => {
  const { policy, kernel } = setup();
  kernel.routesVia(IF1_V4);
  const c = await policy.candidates(v4, named('example.com'));
  assert.deepEqual(c, [
    { ifname: 'if1', source: IF1_V4, family: 4, placedBy: 'route' },
    { ifname: 'if2', source: IF2_V4, family: 4, placedBy: 'fallback' },
  ]);
  assert.deepEqual(kernel.calls, [{ family: 4, ip: v4.ip }]);
});

test("the kernel's choice leads even when its interface has the worse default metric", async () => {
  const { policy, kernel } = setup();
  kernel.routesVia(IF2_V4); // e.g. a specific route or a policy rule via if2
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if2/route', 'if1/fallback']);
});

test('IPv6 targets get IPv6 sources on every candidate', async () => {
  const { policy, kernel } = setup();
  kernel.routesVia(IF2_V6);
  const c = await policy.candidates(v6, literal(v6));
  assert.deepEqual(c, [
    { ifname: 'if2', source: IF2_V6, family: 6, placedBy: 'route' },
    { ifname: 'if1', source: IF1_V6, family: 6, placedBy: 'fallback' },
  ]);
});

test("an interface without carrier is never chosen, even as the kernel's choice (linkdown routes win there)", async () => {
  const { policy, kernel } = setup([loopback(), if1({ carrier: false }), if2()]);
  kernel.routesVia(IF1_V4);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if2/fallback']);
});

test('an interface that is administratively down is never chosen', async () => {
  const { policy, kernel } = setup([loopback(), if1(), if2({ up: false })]);
  kernel.routesVia(IF1_V4);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if1/route']);
});

test('an interface without an address of the family is never chosen, even with a default route of it', async () => {
  // if1 keeps its IPv6 default route but has lost its IPv6 address
  const { policy, kernel } = setup([loopback(), if1({ addresses: if1().addresses.filter((a) => a.family === 4) }), if2()]);
  kernel.routesVia(IF2_V6);
  assert.deepEqual(brief(await policy.candidates(v6, literal(v6))), ['if2/route']);
  // IPv4 is unaffected
  kernel.routesVia(IF1_V4);
  assert.deepEqual(brief(await policy.candidates(v4, literal(v4))), ['if1/route', 'if2/fallback']);
});

test('fallbacks are ordered by their default metric; interfaces without a default route are not fallbacks', async () => {
  const if3 = iface('if3', { index: 4, addresses: ['10.0.3.2/24'], routes: [{ family: 4, metric: 50 }] });
  const if4 = iface('if4', { index: 5, addresses: ['10.0.4.2/24'], routes: [{ family: 4, metric: 150 }] });
  const noDefault = iface('if5', { index: 6, addresses: ['10.0.5.2/24'] });
  const v6only = iface('if6', { index: 7, addresses: ['fd00:6::2/64'], routes: [{ family: 6, metric: 1 }] });
  const { policy, kernel } = setup([loopback(), if2(), noDefault, if4, if1(), v6only, if3]);
  kernel.routesVia(IF2_V4);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), [
    'if2/route',
    'if3/fallback',
    'if1/fallback',
    'if4/fallback',
  ]);
});

test('the lowest metric of an interface counts when it has several default routes of the family', async () => {
  const a = iface('ifa', { addresses: ['10.0.8.2/24'], routes: [{ family: 4, metric: 500 }, { family: 4, metric: 20 }] });
  const { policy, kernel } = setup([loopback(), if1(), if2(), a]);
  kernel.routesVia(IF2_V4);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if2/route', 'ifa/fallback', 'if1/fallback']);
});

test('a loopback destination gets only lo', async () => {
  const { policy, kernel } = setup();
  kernel.routesVia('127.0.0.1');
  assert.deepEqual(await policy.candidates({ ip: '127.0.0.1', family: 4, port: 8080 }, named('localhost', 8080)), [
    { ifname: 'lo', source: '127.0.0.1', family: 4, placedBy: 'route' },
  ]);
  kernel.routesVia('::1');
  assert.deepEqual(await policy.candidates({ ip: '::1', family: 6, port: 8080 }, named('localhost', 8080)), [
    { ifname: 'lo', source: '::1', family: 6, placedBy: 'route' },
  ]);
});

test('lo is never a fallback for a remote destination', async () => {
  const lo = withIface(loopback(), { defaultRoutes: [{ family: 4, gateway: null, metric: 1 }] });
  const { policy, kernel } = setup([lo, if1(), if2()]);
  kernel.routesVia(IF1_V4);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if1/route', 'if2/fallback']);
});

test(
  'a kernel source the snapshot does not know yet is found after a re-read of the monitor',
  async (t) => {
    const if3 = iface('if3', { index: 4, addresses: ['10.0.3.2/24'], routes: [{ family: 4, metric: 10 }] });
    const reader = new FakeReader([loopback(), if1()]);
    const monitor = new Monitor({ reader, watch: false, pollMs: 0 });
    t.after(() => monitor.close());
    const kernel = new Kernel();
    const policy = new Policy(monitor, kernel.find, { affinity: { mode: 'host', lingerMs: LINGER } }, new FakeClock());
    reader.set([loopback(), if1(), if3]); // if3 appeared; the monitor has not re-read yet
    kernel.routesVia('10.0.3.2');
    const c = await policy.candidates(v4, named('example.com'));
    assert.ok(
      monitor.current().interfaces.some((i) => i.name === 'if3'),
      'the policy re-read the monitor when the source was unknown',
    );
    assert.deepEqual(brief(c), ['if3/route', 'if1/fallback']);
  },
);

// ---------------------------------------------------------------------------------------------
// Errors

test('no usable interface: HoldfastError HF_NO_EGRESS', async () => {
  const { policy, kernel } = setup([loopback(), if1({ carrier: false }), if2({ carrier: false })]);
  kernel.routesVia(IF1_V4);
  await assert.rejects(policy.candidates(v4, named('example.com')), (err: unknown) => {
    assert.ok(err instanceof HoldfastError, `expected a HoldfastError, got ${String(err)}`);
    assert.equal(err.code, 'HF_NO_EGRESS');
    return true;
  });
});

test("the kernel has no route (route 'none'): HF_NET_UNREACHABLE", async () => {
  // no interface has an IPv6 default route: nothing to fall back to either
  const noV6Routes = (i: NetInterface) => withIface(i, { defaultRoutes: i.defaultRoutes.filter((r) => r.family === 4) });
  const { policy, kernel } = setup([loopback(), noV6Routes(if1()), noV6Routes(if2())]);
  kernel.fails('ENETUNREACH');
  await assert.rejects(policy.candidates(v6, literal(v6)), (err: unknown) => {
    assert.ok(err instanceof HoldfastError);
    assert.equal(err.code, 'HF_NET_UNREACHABLE');
    return true;
  });
});

test("the kernel's EHOSTUNREACH maps to HF_HOST_UNREACHABLE", async () => {
  const { policy, kernel } = setup([loopback()]);
  kernel.fails('EHOSTUNREACH');
  await assert.rejects(policy.candidates(v4, named('example.com')), { code: 'HF_HOST_UNREACHABLE' });
});

test('a kernel source on no known interface, and nothing to fall back to: HF_NET_UNREACHABLE', async () => {
  const { policy, kernel } = setup([loopback()]);
  kernel.routesVia('10.9.9.9');
  await assert.rejects(policy.candidates(v4, named('example.com')), { code: 'HF_NET_UNREACHABLE' });
});

// ---------------------------------------------------------------------------------------------
// Affinity

test("mode host: a second flow to the same name after the kernel moved to if2 joins if1 ('affinity') while live", async () => {
  const { policy, kernel, clock } = setup();
  const dst = named('Example.COM');
  kernel.routesVia(IF1_V4);
  const [first] = await policy.candidates(v4, dst);
  assert.equal(first.placedBy, 'route');
  policy.connected(dst, v4, first);

  kernel.routesVia(IF2_V4); // a better default via if2
  clock.advance(10 * LINGER); // live flows never expire
  // same name (any case), another address of it
  const c = await policy.candidates(v4b, named('example.com'));
  assert.deepEqual(c, [
    { ifname: 'if1', source: IF1_V4, family: 4, placedBy: 'affinity' },
    { ifname: 'if2', source: IF2_V4, family: 4, placedBy: 'fallback' },
  ]);
  // another name is not affected
  assert.deepEqual(brief(await policy.candidates(v4, named('other.example'))), ['if2/route', 'if1/fallback']);
});

test('mode host: after release the affinity lingers lingerMs, then expires', async () => {
  const { policy, kernel, clock } = setup();
  const dst = named('example.com');
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, dst);
  policy.connected(dst, v4, e);
  kernel.routesVia(IF2_V4);

  clock.advance(1000);
  policy.released(dst, v4, e);
  clock.advance(LINGER); // exactly lingerMs after release: still lingering
  assert.deepEqual(brief(await policy.candidates(v4, dst)), ['if1/affinity', 'if2/fallback']);
  clock.advance(1); // past the linger
  assert.deepEqual(brief(await policy.candidates(v4, dst)), ['if2/route', 'if1/fallback']);
  assert.equal(policy.affinityOf(dst, v4), undefined);
});

test('mode host: the affinity stays live until the last of several flows is released', async () => {
  const { policy, kernel, clock } = setup();
  const dst = named('example.com');
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, dst);
  policy.connected(dst, v4, e);
  policy.connected(dst, v4, e);
  policy.released(dst, v4, e);
  kernel.routesVia(IF2_V4);
  clock.advance(LINGER + 1);
  assert.equal((await policy.candidates(v4, dst))[0].placedBy, 'affinity', 'one flow is still live');
  policy.released(dst, v4, e);
  clock.advance(LINGER + 1);
  assert.equal((await policy.candidates(v4, dst))[0].placedBy, 'route');
});

test('a release through another interface does not end the affinity', async () => {
  const { policy, kernel, clock } = setup();
  const dst = named('example.com');
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, dst);
  policy.connected(dst, v4, e);
  policy.released(dst, v4, { ifname: 'if2', source: IF2_V4, family: 4, placedBy: 'fallback' });
  kernel.routesVia(IF2_V4);
  clock.advance(LINGER + 1);
  assert.equal((await policy.candidates(v4, dst))[0].ifname, 'if1');
});

test('mode host with an address literal keys by the address', async () => {
  const { policy, kernel } = setup();
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, literal(v4));
  policy.connected(literal(v4), v4, e);
  kernel.routesVia(IF2_V4);
  assert.deepEqual(brief(await policy.candidates(v4, literal(v4))), ['if1/affinity', 'if2/fallback']);
  assert.deepEqual(brief(await policy.candidates(v4b, literal(v4b))), ['if2/route', 'if1/fallback']);
});

test('mode address: keys by IP, whatever name the client used', async () => {
  const { policy, kernel } = setup(undefined, { mode: 'address', lingerMs: LINGER });
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, named('a.example'));
  policy.connected(named('a.example'), v4, e);
  kernel.routesVia(IF2_V4);
  // another name, same address: joins
  assert.deepEqual(brief(await policy.candidates(v4, named('b.example'))), ['if1/affinity', 'if2/fallback']);
  // same name, another address: does not
  assert.deepEqual(brief(await policy.candidates(v4b, named('a.example'))), ['if2/route', 'if1/fallback']);
});

test('mode off: never joins', async () => {
  const { policy, kernel } = setup(undefined, { mode: 'off', lingerMs: LINGER });
  const dst = named('example.com');
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, dst);
  policy.connected(dst, v4, e);
  kernel.routesVia(IF2_V4);
  assert.deepEqual(brief(await policy.candidates(v4, dst)), ['if2/route', 'if1/fallback']);
  assert.equal(policy.affinityOf(dst, v4), undefined);
});

test('affinity to an interface that lost carrier is ignored', async () => {
  const { policy, kernel, monitor } = setup();
  const dst = named('example.com');
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, dst);
  policy.connected(dst, v4, e);
  monitor.set([loopback(), if1({ carrier: false }), if2()]);
  kernel.routesVia(IF1_V4); // linkdown route still first in the kernel
  assert.deepEqual(brief(await policy.candidates(v4, dst)), ['if2/fallback']);
});

test('affinity to an address the interface no longer has is ignored', async () => {
  const { policy, kernel, monitor } = setup();
  const dst = named('example.com');
  kernel.routesVia(IF1_V4);
  const [e] = await policy.candidates(v4, dst);
  policy.connected(dst, v4, e);
  const renumbered = iface('if1', { index: 2, addresses: ['10.0.7.2/24'], routes: [{ family: 4, metric: 100 }] });
  monitor.set([loopback(), renumbered, if2()]);
  kernel.routesVia(IF2_V4);
  const c = await policy.candidates(v4, dst);
  assert.deepEqual(brief(c), ['if2/route', 'if1/fallback']);
  assert.equal(c[1].source, '10.0.7.2');
});

// ---------------------------------------------------------------------------------------------
// Back-off

test('failed(ifname): skipped for new flows while another is usable, until the back-off ends', async () => {
  const { policy, kernel, clock } = setup();
  kernel.routesVia(IF1_V4);
  policy.failed('if1');
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if2/fallback']);
  clock.advance(BACKOFF - 1);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if2/fallback']);
  clock.advance(1);
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if1/route', 'if2/fallback']);
});

test('a fallback in back-off is skipped too', async () => {
  const { policy, kernel } = setup();
  kernel.routesVia(IF1_V4);
  policy.failed('if2');
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if1/route']);
});

test("the kernel's interface in back-off is still used when nothing else is usable", async () => {
  const { policy, kernel } = setup([loopback(), if1(), if2({ carrier: false })]);
  kernel.routesVia(IF1_V4);
  policy.failed('if1');
  assert.deepEqual(brief(await policy.candidates(v4, named('example.com'))), ['if1/route']);
});
