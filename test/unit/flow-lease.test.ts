// Issue 12: a flow owns its placement (the affinity lease) and gives it back exactly once when it
// ends, whatever ends it. Flow and Policy on a fake clock; a property test runs random flows with
// random end paths (done, client left, upstream left/error, idle, reset, cut after the grace,
// shutdown, a dial that wins after the client left, a limit refusal, a second family's lease) and
// checks that the policy's live counts return to zero and its affinity table empties after the
// linger.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { CloseReason, Destination, Egress, Lease, NetInterface, Target } from '../../src/contracts.js';
import { Policy } from '../../src/egress/policy.js';
import { EgressLostError } from '../../src/errors.js';
import { FlowTable, type Flow } from '../../src/flows.js';
import { Monitor } from '../../src/net/monitor.js';
import { FakeClock, FakeReader, flush, iface, logSink, loopback, withIface } from '../helpers/fakes.js';

const GRACE = 5_000;
const LINGER = 2_000;
const IF1 = '10.0.1.2';
const IF2 = '10.0.2.2';

const if1 = (patch: Partial<NetInterface> = {}) =>
  withIface(iface('if1', { index: 2, addresses: [`${IF1}/24`], routes: [{ family: 4, metric: 100 }] }), patch);
const if2 = () => iface('if2', { index: 3, addresses: [`${IF2}/24`], routes: [{ family: 4, metric: 200 }] });

const EGRESS: Record<'if1' | 'if2', Egress> = {
  if1: { ifname: 'if1', source: IF1, family: 4, placedBy: 'route' },
  if2: { ifname: 'if2', source: IF2, family: 4, placedBy: 'route' },
};
const DSTS: Destination[] = ['a.example', 'b.example', 'c.example'].map((host) => ({ host, port: 443, isName: true }));
const TARGETS: Target[] = [1, 2, 3].map((n) => ({ ip: `93.184.216.${n}`, family: 4, port: 443 }));

function setup(t: TestContext, maxFlows = Infinity) {
  const clock = new FakeClock();
  const sink = logSink();
  const reader = new FakeReader([loopback(), if1(), if2()]);
  const monitor = new Monitor({ reader, watch: false, pollMs: 0 });
  t.after(() => monitor.close());
  const policy = new Policy(monitor, () => IF1, { affinity: { mode: 'host', lingerMs: LINGER } }, clock);
  const table = new FlowTable({ graceMs: GRACE, log: sink.log, clock, limits: { maxFlows, maxFlowsPerClient: 0 } });
  t.after(() => table.close());
  table.watch(monitor);
  /** leases handed out, with how often each was given back */
  const leases: { releases: number }[] = [];
  const lease = (dst: Destination, target: Target, egress: Egress): Lease => {
    const inner = policy.lease(dst, target, egress);
    const rec = { releases: 0 };
    leases.push(rec);
    return {
      release() {
        rec.releases++;
        inner.release();
      },
    };
  };
  /** Make the host look like `interfaces`; the monitor tells its listeners on a later tick. */
  const net = async (interfaces: NetInterface[]) => {
    reader.set(interfaces);
    monitor.readNow();
    await flush();
  };
  return { clock, sink, policy, table, lease, leases, net };
}

test('12: a flow gives its lease back when it ends, once, and a lease taken after the end is given back at once', (t) => {
  const { policy, table, lease, leases, clock } = setup(t);
  const dst = DSTS[0];
  const f = table.open('socks5-connect', '127.0.0.1:1', dst);
  f.hold(lease(dst, TARGETS[0], EGRESS.if1));
  f.hold(lease(dst, TARGETS[0], EGRESS.if1)); // a second family's socket, say
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 2 });
  f.end('client left');
  f.end('done');
  assert.deepEqual(leases.map((l) => l.releases), [1, 1]);
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 0 }, 'lingering');
  // the dial won after the client had left: the lease goes back at once
  f.hold(lease(dst, TARGETS[0], EGRESS.if1));
  assert.deepEqual(leases.map((l) => l.releases), [1, 1, 1]);
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 0 });
  clock.advance(LINGER + 1);
  assert.deepEqual(policy.affinityTable(), { entries: 0, live: 0 });
});

test('12: a cut flow gives its lease back, whether its handler ends it or not yet', async (t) => {
  const { policy, table, lease, net, clock } = setup(t);
  const dst = DSTS[0];
  const a = table.open('socks5-connect', '127.0.0.1:1', dst);
  a.pinned({ egress: EGRESS.if1, target: TARGETS[0], localAddress: IF1, attempts: '' });
  a.hold(lease(dst, TARGETS[0], EGRESS.if1));
  a.onCut((err) => a.end('reset', err));
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  assert.equal(a.closeReason, 'cut');
  assert.equal(a.closeCode, 'HF_EGRESS_LOST');
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 0 });
  clock.advance(LINGER + 1);
  assert.deepEqual(policy.affinityTable(), { entries: 0, live: 0 });
});

test("14: a resumed download's flow gives back its old lease, holds the new one, and is no longer cut", async (t) => {
  const { policy, table, lease, leases, net, clock, sink } = setup(t);
  const dst = DSTS[0];
  const a = table.open('http-forward', '127.0.0.1:1', dst);
  a.pinned({ egress: EGRESS.if1, target: TARGETS[0], localAddress: IF1, attempts: '' });
  a.hold(lease(dst, TARGETS[0], EGRESS.if1));
  let cuts = 0;
  // the forwarder's handler: the upstream is dropped, the flow stays (it will move)
  a.onCut(() => cuts++);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  assert.equal(cuts, 1);
  assert.equal(a.ended, false);
  a.resumedOn({ egress: EGRESS.if2, target: TARGETS[0], localAddress: IF2 }, lease(dst, TARGETS[0], EGRESS.if2), 1234);
  assert.deepEqual(leases.map((l) => l.releases), [1, 0], 'the old placement given back, the new one held');
  assert.equal(a.interface, 'if2');
  assert.equal(a.localAddress, IF2);
  assert.equal(a.resumed, 1);
  assert.equal(a.toJSON().resumed, 1);
  assert.equal(a.toJSON().egress, 'if2');
  const line = sink.lines.find((l) => l.msg === 'flow resumed');
  assert.ok(line, 'one "flow resumed" line');
  assert.equal(line.from, 'if1');
  assert.equal(line.to, 'if2');
  assert.equal(line.offset, 1234);
  // the cut was cleared: the flow ends as its handler says, and a later loss of if2 cuts it again
  await net([loopback(), if1({ carrier: false }), withIface(if2(), { carrier: false })]);
  clock.advance(GRACE);
  assert.equal(cuts, 2, 'cut again after its new interface is lost');
  a.end('upstream error', new Error('x'));
  assert.equal(a.closeReason, 'cut');
  assert.deepEqual(leases.map((l) => l.releases), [1, 1]);
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 0 });
});

test('14: a resumed flow that then completes ends as done, not cut', async (t) => {
  const { table, lease, leases, net, clock } = setup(t);
  const dst = DSTS[0];
  const a = table.open('http-forward', '127.0.0.1:1', dst);
  a.pinned({ egress: EGRESS.if1, target: TARGETS[0], localAddress: IF1, attempts: '' });
  a.hold(lease(dst, TARGETS[0], EGRESS.if1));
  a.onCut(() => {});
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  a.resumedOn({ egress: EGRESS.if2, target: TARGETS[0], localAddress: IF2 }, lease(dst, TARGETS[0], EGRESS.if2), 1);
  a.end('done');
  assert.equal(a.closeReason, 'done');
  assert.equal(a.closeCode, null);
  assert.deepEqual(leases.map((l) => l.releases), [1, 1]);
  // a resume after the end gives the new lease back at once
  a.resumedOn({ egress: EGRESS.if1, target: TARGETS[0], localAddress: IF1 }, lease(dst, TARGETS[0], EGRESS.if1), 2);
  assert.deepEqual(leases.map((l) => l.releases), [1, 1, 1]);
  assert.equal(a.resumed, 1);
});

test('12: a lease is given back once even if release is called again (policy side)', (t) => {
  const { policy } = setup(t);
  const dst = DSTS[0];
  const a = policy.lease(dst, TARGETS[0], EGRESS.if1);
  const b = policy.lease(dst, TARGETS[0], EGRESS.if1);
  a.release();
  a.release();
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 1 }, "b's flow still holds the destination");
  b.release();
  assert.deepEqual(policy.affinityTable(), { entries: 1, live: 0 });
});

type EndPath =
  | { kind: 'end'; reason: CloseReason }
  | { kind: 'cut' }
  | { kind: 'shutdown' }
  | { kind: 'late-dial' }
  | { kind: 'dial-failed' };

const endPath: fc.Arbitrary<EndPath> = fc.oneof(
  fc
    .constantFrom<CloseReason>('done', 'client left', 'upstream left', 'upstream error', 'idle', 'reset', 'timeout', 'failed')
    .map((reason) => ({ kind: 'end' as const, reason })),
  fc.constant({ kind: 'cut' as const }),
  fc.constant({ kind: 'shutdown' as const }),
  fc.constant({ kind: 'late-dial' as const }),
  fc.constant({ kind: 'dial-failed' as const }),
);

const flowSpec = fc.record({
  dst: fc.nat({ max: DSTS.length - 1 }),
  egress: fc.constantFrom<'if1' | 'if2'>('if1', 'if2'),
  leases: fc.integer({ min: 1, max: 2 }),
  path: endPath,
  /** when it ends, in steps after all have opened */
  order: fc.nat({ max: 1000 }),
  /** ms the clock moves before it ends */
  wait: fc.nat({ max: 3000 }),
  /** a cut handler that ends the flow at once (else the flow ends when its sockets close, later) */
  endOnCut: fc.boolean(),
});

test('12: property: random flows with random end paths leave no live count, and the table empties after the linger', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(flowSpec, { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 30 }), async (specs, maxFlows) => {
      const local = {
        after: (fn: () => void) => cleanups.push(fn),
      } as unknown as TestContext;
      const cleanups: (() => void)[] = [];
      try {
        const { policy, table, lease, leases, net, clock } = setup(local, maxFlows);
        const live: { flow: Flow; spec: (typeof specs)[number] }[] = [];
        const cutSeen = new Set<Flow>();
        for (const spec of specs) {
          const dst = DSTS[spec.dst];
          let flow: Flow;
          try {
            flow = table.open('socks5-connect', '127.0.0.1:1', dst);
          } catch (err) {
            // the limit: no flow, nothing taken
            assert.equal((err as { code?: string }).code, 'HF_LIMIT');
            continue;
          }
          if (spec.path.kind === 'dial-failed' || spec.path.kind === 'late-dial') {
            // no lease while dialing
            live.push({ flow, spec });
            continue;
          }
          const egress = EGRESS[spec.egress];
          flow.pinned({ egress, target: TARGETS[spec.dst], localAddress: egress.source, attempts: '' });
          for (let i = 0; i < spec.leases; i++) flow.hold(lease(dst, TARGETS[spec.dst], egress));
          flow.onCut((err) => {
            cutSeen.add(flow);
            if (spec.endOnCut) flow.end('client left', err);
          });
          live.push({ flow, spec });
        }
        const held = leases.length;
        assert.ok(policy.affinityTable().live <= held);
        live.sort((a, b) => a.spec.order - b.spec.order);
        for (const { flow, spec } of live) {
          clock.advance(spec.wait);
          const dst = DSTS[spec.dst];
          switch (spec.path.kind) {
            case 'end':
              flow.end(spec.path.reason, spec.path.reason === 'done' ? undefined : new Error(spec.path.reason));
              break;
            case 'dial-failed':
              flow.end('dial failed', new EgressLostError('no'));
              break;
            case 'late-dial':
              // the client left while dialing; the dial won later: the lease goes back at once
              flow.end('client left');
              flow.hold(lease(dst, TARGETS[spec.dst], EGRESS[spec.egress]));
              break;
            case 'cut': {
              // every live flow pinned to if1 is cut after the grace
              const onIf1 = live.filter((l) => !l.flow.ended && l.flow.interface === 'if1').map((l) => l.flow);
              await net([loopback(), if1({ carrier: false }), if2()]);
              clock.advance(GRACE);
              for (const f of onIf1) assert.ok(cutSeen.has(f), `flow #${f.id} on if1 was cut`);
              await net([loopback(), if1(), if2()]);
              break;
            }
            case 'shutdown':
              for (const f of table.list()) f.cut(new Error('holdfast is shutting down'), 'shutdown');
              break;
          }
        }
        // cut flows whose handler did not end them end when their sockets close
        for (const { flow } of live) flow.end('reset');
        assert.equal(table.size, 0);
        assert.ok(
          leases.every((l) => l.releases === 1),
          `each lease given back exactly once: ${leases.map((l) => l.releases).join(',')}`,
        );
        assert.equal(policy.affinityTable().live, 0, 'no live count left');
        clock.advance(LINGER + 1);
        assert.deepEqual(policy.affinityTable(), { entries: 0, live: 0 }, 'the affinity table empties after the linger');
      } finally {
        for (const fn of cleanups) fn();
      }
    }),
    { numRuns: 300 },
  );
});
