// The flow table's own change feed (issue 13, item 1): every table tells its subscribers of its
// flows' opens, closes and cuts, so Stats counts exactly its own flows however many holdfasts
// share the process; the diagnostics channels stay as an outside tap.
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { test, type TestContext } from 'node:test';
import type { Destination } from '../../src/contracts.js';
import { DnsError } from '../../src/errors.js';
import { FlowTable, type FlowEvent } from '../../src/flows.js';
import { Stats } from '../../src/observe/stats.js';
import { FakeClock, FakeMonitor, iface, logSink, loopback, withIface } from '../helpers/fakes.js';

const dst: Destination = { host: 'example.org', port: 443, isName: true };
const if1 = iface('if1', { index: 2, addresses: ['10.0.1.2/24'], routes: [{ family: 4, metric: 100, gateway: '10.0.1.1' }] });

function setup(t: TestContext) {
  const clock = new FakeClock();
  const monitor = new FakeMonitor([loopback(), if1]);
  const table = new FlowTable({ graceMs: 1000, log: logSink().log, clock });
  t.after(() => table.close());
  table.watch(monitor);
  const stats = new Stats({ flows: table, monitor, binder: 'device', clock });
  t.after(() => stats.close());
  const pin = (kind: 'socks5-connect' | 'http-forward' = 'socks5-connect') => {
    const f = table.open(kind, '127.0.0.1:40000', dst);
    f.pinned({ egress: { ifname: 'if1', source: '10.0.1.2', family: 4, placedBy: 'route' }, target: { ip: '192.0.2.1', family: 4, port: 443 }, localAddress: '10.0.1.2', attempts: '' });
    return f;
  };
  return { clock, monitor, table, stats, pin };
}

test('a FlowTable tells its subscribers of open, close and cut, in order; unsubscribe stops it', (t) => {
  const { clock, monitor, table, pin } = setup(t);
  const seen: string[] = [];
  const off = table.onChange((e: FlowEvent) => seen.push(e.type === 'cut' ? `cut ${e.egress} ${e.flows} ${e.why}` : `${e.type} #${e.flow.id}`));
  const a = pin();
  const b = pin();
  a.end('done');
  monitor.set([loopback(), withIface(if1, { carrier: false })]);
  clock.advance(1000);
  assert.equal(b.ended, true);
  assert.deepEqual(seen, ['open #1', 'open #2', 'close #1', 'close #2', 'cut if1 1 no carrier']);
  off();
  pin().end('done');
  assert.equal(seen.length, 5);
});

test('a listener that throws stops neither the other listeners nor the flow', (t) => {
  const { table, pin } = setup(t);
  table.onChange(() => {
    throw new Error('boom');
  });
  const got: string[] = [];
  table.onChange((e) => got.push(e.type));
  const f = pin();
  f.end('done');
  assert.equal(f.ended, true);
  assert.equal(table.size, 0);
  assert.deepEqual(got, ['open', 'close']);
});

test('13: two holdfasts in one process: each Stats counts its own flows, dial failures and cuts only', (t) => {
  const one = setup(t);
  const two = setup(t);
  one.pin();
  // a flow whose dial failed never pins: the old channel-based Stats could not tell whose it
  // was once two instances ran, and counted it nowhere
  two.table.open('http-forward', '127.0.0.1:40001', dst).end('dial failed', new DnsError('no such name'));
  two.pin();
  two.pin();
  two.monitor.set([loopback(), withIface(if1, { carrier: false })]);
  two.clock.advance(1000);
  const c1 = one.stats.counters();
  const c2 = two.stats.counters();
  assert.deepEqual([...c1.flowsOpened], [['socks5-connect', 1]]);
  assert.deepEqual([...c2.flowsOpened].sort(), [['http-forward', 1], ['socks5-connect', 2]]);
  assert.deepEqual([...c2.dialErrors], [['HF_DNS', 1]]);
  assert.deepEqual([...c1.dialErrors], []);
  assert.deepEqual([...c2.cuts], [['if1|no carrier', 2]]);
  assert.deepEqual([...c1.cuts], [], 'the other table lost nothing');
  assert.equal(one.stats.events().filter((e) => e.type === 'cut').length, 0);
  assert.equal(two.stats.events().filter((e) => e.type === 'cut').length, 1);
});

test('the diagnostics channels still publish, as an outside tap', (t) => {
  const { table, pin } = setup(t);
  const got: string[] = [];
  const onOpen = (m: unknown) => got.push(`open ${(m as { id: number }).id}`);
  const onClose = (m: unknown) => got.push(`close ${(m as { id: number }).id}`);
  subscribe('holdfast:flow:open', onOpen);
  t.after(() => unsubscribe('holdfast:flow:open', onOpen));
  subscribe('holdfast:flow:close', onClose);
  t.after(() => unsubscribe('holdfast:flow:close', onClose));
  const f = pin();
  f.end('done');
  assert.equal(table.size, 0);
  assert.deepEqual(got, [`open ${f.id}`, `close ${f.id}`]);
});
