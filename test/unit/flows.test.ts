// The FlowTable on a fake clock and a Monitor over a fake reader: a pinned interface that loses
// carrier or the flow's address is given a grace period, then its flows (only its) are cut with
// HF_EGRESS_LOST; a path that heals in time cuts nothing; each flow writes one 'flow close' line.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { CloseReason, Destination, NetInterface } from '../../src/contracts.js';
import { EgressLostError } from '../../src/errors.js';
import { FlowTable, type Flow } from '../../src/flows.js';
import { Monitor } from '../../src/net/monitor.js';
import { FakeClock, FakeReader, flush, iface, logSink, loopback, withIface } from '../helpers/fakes.js';

const GRACE = 10_000;
const IF1 = '10.0.1.2';
const IF1_B = '10.0.1.3';
const IF2 = '10.0.2.2';

const if1 = (patch: Partial<NetInterface> = {}) =>
  withIface(
    iface('if1', { index: 2, addresses: [`${IF1}/24`, `${IF1_B}/24`], routes: [{ family: 4, metric: 100 }] }),
    patch,
  );
const if2 = (patch: Partial<NetInterface> = {}) =>
  withIface(iface('if2', { index: 3, addresses: [`${IF2}/24`], routes: [{ family: 4, metric: 200 }] }), patch);
const healthy = () => [loopback(), if1(), if2()];

function setup(t: TestContext, graceMs = GRACE) {
  const clock = new FakeClock();
  const sink = logSink();
  const reader = new FakeReader(healthy());
  const monitor = new Monitor({ reader, watch: false, pollMs: 0 });
  t.after(() => monitor.close());
  const table = new FlowTable({ graceMs, log: sink.log, clock });
  t.after(() => table.close());
  table.watch(monitor);
  /** Make the host look like `interfaces` and let the monitor announce it. */
  const net = async (interfaces: NetInterface[]) => {
    reader.set(interfaces);
    monitor.readNow();
    await flush(); // the monitor tells its listeners on a later tick
  };
  return { clock, sink, reader, monitor, table, net };
}

const dst: Destination = { host: 'example.com', port: 443, isName: true };

/** A flow pinned to `ifname`/`source`, with a cut handler that records (and does not end the flow). */
function pinnedFlow(table: FlowTable, ifname: string, source: string, endOnCut = false) {
  const flow = table.open('socks5-connect', '127.0.0.1:40000', dst);
  flow.pinned({
    egress: { ifname, source, family: 4, placedBy: 'route' },
    target: { ip: '93.184.216.34', family: 4, port: 443 },
    localAddress: source,
    attempts: '',
  });
  const cuts: Error[] = [];
  flow.onCut((err) => {
    cuts.push(err);
    if (endOnCut) flow.end('reset');
  });
  return { flow, cuts };
}

function assertCutOnce(cuts: Error[], why: RegExp): void {
  assert.equal(cuts.length, 1, `expected one cut, got ${cuts.length}`);
  const err = cuts[0] as Error & { code?: string };
  assert.equal(err.code, 'HF_EGRESS_LOST');
  assert.ok(err instanceof EgressLostError);
  assert.match(err.message, why);
}

// ---------------------------------------------------------------------------------------------
// Grace and cut

test('flow pinned to if1 loses carrier: nothing until the grace passes, then one cut with HF_EGRESS_LOST', async (t) => {
  const { clock, table, net, sink } = setup(t);
  const { flow, cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  assert.equal(cuts.length, 0, 'not cut at once');
  clock.advance(GRACE - 1);
  assert.equal(cuts.length, 0, 'not cut before the grace ran out');
  clock.advance(1);
  assertCutOnce(cuts, /if1: no carrier/);
  clock.advance(10 * GRACE);
  assert.equal(cuts.length, 1, 'cut only once');
  assert.equal(flow.ended, false, 'the handler decides when the flow ends');
  assert.equal(table.totals.cut, 1);
  const [line] = sink.withMsg('egress cut');
  assert.equal(line.egress, 'if1');
  assert.equal(line.flows, 1);
  assert.equal(line.why, 'no carrier');
  assert.equal(line.downForMs, GRACE);
});

test('carrier back within the grace: not cut, and the grace timer is gone', async (t) => {
  const { clock, table, net, sink } = setup(t);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE / 2);
  await net(healthy());
  assert.equal(clock.pending, 0, 'grace timer cancelled');
  clock.advance(10 * GRACE);
  assert.equal(cuts.length, 0);
  assert.equal(table.totals.cut, 0);
  const healed = sink.withMsg('egress healed');
  assert.equal(healed.length, 1);
  assert.equal(healed[0].egress, 'if1');
  assert.equal(healed[0].downForMs, GRACE / 2);
});

test('a new loss after healing starts a new grace', async (t) => {
  const { clock, table, net } = setup(t);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE - 1000);
  await net(healthy());
  clock.advance(500);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE - 1);
  assert.equal(cuts.length, 0, 'the grace counts from the second loss');
  clock.advance(1);
  assertCutOnce(cuts, /no carrier/);
});

test("the flow's address removed: cut after the grace; a flow on another address of if1 stays", async (t) => {
  const { clock, table, net } = setup(t);
  const a = pinnedFlow(table, 'if1', IF1);
  const b = pinnedFlow(table, 'if1', IF1_B);
  await net([loopback(), if1({ addresses: if1().addresses.filter((x) => x.ip !== IF1) }), if2()]);
  clock.advance(GRACE - 1);
  assert.equal(a.cuts.length, 0);
  clock.advance(1);
  assertCutOnce(a.cuts, /address gone/);
  assert.equal(b.cuts.length, 0);
});

test('interface gone or administratively down: cut after the grace', async (t) => {
  const { clock, table, net } = setup(t);
  const gone = pinnedFlow(table, 'if1', IF1);
  const down = pinnedFlow(table, 'if2', IF2);
  await net([loopback(), if2({ up: false })]);
  clock.advance(GRACE);
  assertCutOnce(gone.cuts, /interface gone/);
  assertCutOnce(down.cuts, /interface down/);
});

test('grace 0: cut at once', async (t) => {
  const { clock, table, net } = setup(t, 0);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  assertCutOnce(cuts, /no carrier/);
  assert.equal(clock.pending, 0);
});

test('flows on other interfaces, flows not yet pinned and loopback flows are untouched', async (t) => {
  const { clock, table, net } = setup(t);
  const on1 = pinnedFlow(table, 'if1', IF1);
  const on2 = pinnedFlow(table, 'if2', IF2);
  const onLo = pinnedFlow(table, 'lo', '127.0.0.1');
  const unpinned = table.open('http-connect', '127.0.0.1:40001', dst);
  const unpinnedCuts: Error[] = [];
  unpinned.onCut((e) => unpinnedCuts.push(e));
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  assertCutOnce(on1.cuts, /if1/);
  assert.equal(on2.cuts.length, 0);
  assert.equal(onLo.cuts.length, 0);
  assert.equal(unpinnedCuts.length, 0);
  assert.equal(table.size, 4, 'cut handlers that do not end leave the flows listed');
});

test('a flow that ended during the grace is not cut', async (t) => {
  const { clock, table, net } = setup(t);
  const { flow, cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  flow.end('done');
  clock.advance(GRACE);
  assert.equal(cuts.length, 0);
  assert.equal(table.totals.cut, 0);
  assert.equal(table.size, 0);
});

test('without a cut handler, a cut ends the flow', async (t) => {
  const { clock, table, net, sink } = setup(t);
  const flow = table.open('socks5-connect', '127.0.0.1:40000', dst);
  flow.pinned({
    egress: { ifname: 'if1', source: IF1, family: 4, placedBy: 'route' },
    target: { ip: '93.184.216.34', family: 4, port: 443 },
    localAddress: IF1,
    attempts: '',
  });
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  assert.equal(flow.ended, true);
  assert.equal(table.size, 0);
  const [close] = sink.withMsg('flow close');
  assert.equal(close.reason, 'cut');
  assert.equal(close.code, 'HF_EGRESS_LOST');
});

test('after close() the table no longer listens to the monitor', async (t) => {
  const { clock, table, net } = setup(t);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  table.close();
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  assert.equal(cuts.length, 0);
  assert.equal(clock.pending, 0);
});

test('close() during a grace cancels its timer', async (t) => {
  const { clock, table, net } = setup(t);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  assert.equal(clock.pending, 1);
  table.close();
  assert.equal(clock.pending, 0);
  clock.advance(GRACE);
  assert.equal(cuts.length, 0);
});

// ---------------------------------------------------------------------------------------------
// cutEgress directly

test('cutEgress twice: the cut handler runs once', async (t) => {
  const { table, net } = setup(t);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  assert.equal(table.cutEgress('if1'), 1);
  table.cutEgress('if1');
  assertCutOnce(cuts, /no carrier/);
});

test(
  'cutEgress twice counts and logs the cut once',
  async (t) => {
    const { table, net, sink } = setup(t);
    pinnedFlow(table, 'if1', IF1);
    await net([loopback(), if1({ carrier: false }), if2()]);
    assert.equal(table.cutEgress('if1'), 1);
    assert.equal(table.cutEgress('if1'), 0, 'nothing new was cut');
    assert.equal(table.totals.cut, 1);
    assert.equal(sink.withMsg('egress cut').length, 1);
  },
);

test(
  'a flow cut after the grace and still closing is not counted again on the next monitor change',
  async (t) => {
    const { clock, table, net, sink } = setup(t);
    const { cuts } = pinnedFlow(table, 'if1', IF1);
    await net([loopback(), if1({ carrier: false }), if2()]);
    clock.advance(GRACE);
    assert.equal(cuts.length, 1);
    await net([loopback(), if1({ carrier: false }), if2({ carrier: false })]); // an unrelated change
    clock.advance(GRACE);
    assert.equal(cuts.length, 1, 'the handler runs once');
    assert.equal(table.totals.cut, 1);
    assert.equal(sink.withMsg('egress cut').length, 1);
  },
);

test('cutEgress with handlers that end the flow: the second call finds nothing', async (t) => {
  const { table, net } = setup(t);
  const { flow, cuts } = pinnedFlow(table, 'if1', IF1, true);
  await net([loopback(), if1({ carrier: false }), if2()]);
  assert.equal(table.cutEgress('if1'), 1);
  assert.equal(table.cutEgress('if1'), 0);
  assert.equal(cuts.length, 1);
  assert.equal(flow.ended, true);
  assert.equal(table.totals.cut, 1);
});

test('cutEgress on a healthy interface cuts nothing', async (t) => {
  const { table } = setup(t);
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  assert.equal(table.cutEgress('if1'), 0);
  assert.equal(cuts.length, 0);
});

test('12: a reloaded grace (FlowTable.configure) applies to the next loss', async (t) => {
  const { clock, table, net } = setup(t);
  table.configure({ graceMs: 1000, limits: { maxFlows: Infinity, maxFlowsPerClient: 0 } });
  const { cuts } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(999);
  assert.equal(cuts.length, 0);
  clock.advance(1);
  assert.equal(cuts.length, 1, 'cut after the reloaded grace (1000 ms), not the first (10000 ms)');
});

// ---------------------------------------------------------------------------------------------
// The 'flow close' line

test("'flow close' is written once per flow, with reason, bytes and duration", async (t) => {
  const { clock, table, sink } = setup(t);
  const a = pinnedFlow(table, 'if1', IF1).flow;
  const b = pinnedFlow(table, 'if2', IF2).flow;
  a.bytesUp = 120;
  a.bytesDown = 34_000;
  clock.advance(2500);
  a.end('done');
  a.end('client left');
  b.end('upstream error', Object.assign(new Error('unreachable'), { code: 'EHOSTUNREACH' }));
  b.end('done');
  const closes = sink.withMsg('flow close');
  assert.equal(closes.length, 2);
  const byFlow = new Map(closes.map((l) => [l.flow, l]));
  const la = byFlow.get(a.id);
  const lb = byFlow.get(b.id);
  assert.ok(la && lb, `lines for flows ${a.id} and ${b.id}: ${JSON.stringify(closes)}`);
  assert.equal(la.reason, 'done');
  assert.equal(la.bytesUp, 120);
  assert.equal(la.bytesDown, 34_000);
  assert.equal(la.durationMs, 2500);
  assert.equal(la.code, undefined);
  assert.equal(la.kind, 'socks5-connect');
  assert.equal(lb.reason, 'upstream error');
  assert.equal(lb.code, 'HF_HOST_UNREACHABLE', 'an OS error of a failure maps through the one table');
  assert.equal(table.size, 0);
});

test('12: an ordinary end carries no code, even with an error: client left, upstream left, idle, shutdown', (t) => {
  const { table, sink } = setup(t);
  const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
  const pipe = () => Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
  const ends: [CloseReason, Error | undefined][] = [
    ['client left', reset()],
    ['client left', pipe()],
    ['upstream left', reset()],
    ['reset', reset()],
    ['idle', Object.assign(new Error('idle for 1000 ms'), { code: 'idle' })],
    ['done', undefined],
  ];
  for (const [reason, err] of ends) pinnedFlow(table, 'if1', IF1).flow.end(reason, err);
  const s = pinnedFlow(table, 'if1', IF1).flow;
  s.cut(new Error('holdfast is shutting down'), 'shutdown');
  s.end('done');
  const closes = sink.withMsg('flow close');
  assert.deepEqual(
    closes.map((l) => [l.reason, l.code ?? null]),
    [...ends.map(([r]) => [r, null]), ['shutdown', null]],
  );
});

test("a cut flow's close line says reason 'cut' and HF_EGRESS_LOST, whatever the handler reports", async (t) => {
  const { clock, table, net, sink } = setup(t);
  const { flow } = pinnedFlow(table, 'if1', IF1);
  await net([loopback(), if1({ carrier: false }), if2()]);
  clock.advance(GRACE);
  flow.end('upstream left');
  flow.end('done');
  const closes = sink.withMsg('flow close');
  assert.equal(closes.length, 1);
  assert.equal(closes[0].reason, 'cut');
  assert.equal(closes[0].code, 'HF_EGRESS_LOST');
  assert.equal(closes[0].flow, flow.id);
});

test("'flow open' is written when the flow is pinned, with its egress", async (t) => {
  const { table, sink } = setup(t);
  const { flow } = pinnedFlow(table, 'if2', IF2);
  const [open] = sink.withMsg('flow open');
  assert.equal(open.flow, flow.id);
  assert.equal(open.egress, 'if2');
  assert.equal(open.src, IF2);
  assert.equal(open.placedBy, 'route');
  assert.equal(open.dst, 'example.com:443');
  const info = flow.toJSON();
  assert.equal(info.egress, 'if2');
  assert.equal(info.src, IF2);
});

test('list() and size follow open and end', async (t) => {
  const { table } = setup(t);
  const flows: Flow[] = [table.open('socks5-udp', 'c', dst), table.open('http-forward', 'c', dst)];
  assert.deepEqual(
    table.list().map((f) => f.id),
    flows.map((f) => f.id),
  );
  flows[0].end('done');
  assert.deepEqual(
    table.list().map((f) => f.id),
    [flows[1].id],
  );
  assert.equal(table.totals.opened, 2);
});

test('list() keeps open order through many ends and compactions; size, limits and cuts stay exact', async (t) => {
  const { table, net } = setup(t);
  table.configure({ graceMs: 0, limits: { maxFlows: 300, maxFlowsPerClient: 2 } });
  // 300 flows from 150 clients (two each), then every other one ends: the holes are compacted
  const flows: Flow[] = [];
  for (let i = 0; i < 300; i++) flows.push(table.open('socks5-connect', `10.9.${i >> 8}.${(i >> 1) & 255}:${1000 + i}`, dst));
  assert.equal(table.size, 300);
  assert.throws(() => table.open('socks5-connect', '10.9.9.9:1', dst), /too many flows \(300/);
  for (let i = 0; i < 300; i += 2) flows[i].end('done');
  assert.equal(table.size, 150);
  const left = flows.filter((_f, i) => i % 2 === 1);
  assert.deepEqual(table.list().map((f) => f.id), left.map((f) => f.id), 'open order, ended ones gone');
  flows[0].end('done'); // ending twice changes nothing
  assert.equal(table.size, 150);
  // each client has one live flow: one more is allowed, a third is not
  table.open('socks5-connect', `10.9.0.0:9`, dst);
  assert.throws(() => table.open('socks5-connect', `10.9.0.0:10`, dst), /too many flows from 10\.9\.0\.0 \(2/);
  // a cut still finds every flow pinned to the interface, after the compactions
  for (const f of left.slice(0, 10)) f.pinned({ egress: { ifname: 'if1', source: IF1, family: 4, placedBy: 'route' }, target: { ip: '1.2.3.4', family: 4, port: 80 }, localAddress: IF1, attempts: '' });
  await net([loopback(), if1({ carrier: false }), if2()]);
  assert.equal(table.totals.cut, 10);
  assert.equal(table.size, 141);
  for (const f of table.list()) f.end('done');
  assert.equal(table.size, 0);
  assert.deepEqual(table.list(), []);
});

test('per-client counts stay exact when many clients come and go (their entries are pruned)', (t) => {
  const { table } = setup(t);
  table.configure({ graceMs: GRACE, limits: { maxFlows: 100_000, maxFlowsPerClient: 1 } });
  const keep = table.open('socks5-connect', '10.8.0.1:1', dst);
  // 3000 clients, one flow each, each ended: their counts fall to 0 and are pruned on the way
  for (let i = 0; i < 3000; i++) table.open('socks5-connect', `10.7.${i >> 8}.${i & 255}:5`, dst).end('done');
  for (let i = 0; i < 3000; i += 97) table.open('socks5-connect', `10.7.${i >> 8}.${i & 255}:6`, dst).end('done');
  assert.throws(() => table.open('socks5-connect', '10.8.0.1:2', dst), /too many flows from 10\.8\.0\.1 \(1/, 'a live client still counts');
  keep.end('done');
  table.open('socks5-connect', '10.8.0.1:3', dst).end('done');
  assert.equal(table.size, 0);
});
