// Issue 15: the egress policy with roles and destination rules, on fake snapshots: a backup with
// the better metric takes new flows only when no normal interface is usable, and gives them back
// when one returns; never refuses; a rule narrows a flow to its via against the kernel's choice;
// names resolve with the DNS of the interface the rule or role picks; a reload replaces both.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Destination, Egress, NetInterface, Target } from '../../src/contracts.js';
import { HfCode, HoldfastError } from '../../src/errors.js';
import { Policy } from '../../src/egress/policy.js';
import { RoleBook, type RoleSettings } from '../../src/egress/roles.js';
import { compileRules, type RuleSpec } from '../../src/egress/rules.js';
import type { InterfaceType } from '../../src/net/iftype.js';
import type { SourceFinder } from '../../src/net/route.js';
import { FakeClock, FakeMonitor, iface, loopback, withIface } from '../helpers/fakes.js';

const IF1 = '10.0.1.2';
const IF2 = '10.0.2.2';
// if2 has the better metric: the kernel picks it whenever it is there
const if1 = (spec: Partial<NetInterface> = {}) =>
  withIface(iface('if1', { index: 2, addresses: [`${IF1}/24`], routes: [{ family: 4, metric: 100 }] }), spec);
const if2 = (spec: Partial<NetInterface> = {}) =>
  withIface(iface('if2', { index: 3, addresses: [`${IF2}/24`], routes: [{ family: 4, metric: 50 }] }), spec);

function setup(
  opts: { roles?: Partial<RoleSettings>; rules?: RuleSpec[]; types?: Record<string, InterfaceType>; metered?: Record<string, boolean>; extra?: NetInterface[] } = {},
) {
  const monitor = new FakeMonitor([loopback(), if1(), if2(), ...(opts.extra ?? [])]);
  let source = IF2;
  const find: SourceFinder = () => source;
  const types = opts.types ?? {};
  const book = new RoleBook(
    { interfaces: {}, types: {}, metered: {}, ...opts.roles },
    { typeOf: (i) => types[i.name] ?? 'ethernet', nmMetered: (n) => opts.metered?.[n] },
  );
  const policy = new Policy(monitor, find, { affinity: { mode: 'host', lingerMs: 30_000 }, roles: book, rules: compileRules(opts.rules ?? []) }, new FakeClock());
  return { monitor, policy, book, kernelVia: (s: string) => (source = s) };
}

const t4 = (ip: string, port = 443): Target => ({ ip, family: 4, port });
const named = (host: string, port = 443): Destination => ({ host, port, isName: true });
const brief = (es: readonly Egress[]) => es.map((e) => `${e.ifname}/${e.placedBy}`);

async function refusal(p: Promise<unknown>): Promise<HoldfastError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HoldfastError, `a HoldfastError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a refusal');
}

test('15: a backup with the better metric takes no new flows while a normal interface lives, takes them when it dies, gives them back', async () => {
  const { monitor, policy, kernelVia } = setup({ roles: { interfaces: { if2: { role: 'backup' } } } });
  kernelVia(IF2);
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('a.example'))), ['if1/role']);
  assert.equal(policy.bestForNewFlows(4), 'if1', '/status says new flows go to if1');
  // if1 loses carrier: the backup is the only usable one
  monitor.set([loopback(), if1({ carrier: false }), if2()]);
  assert.equal(policy.bestForNewFlows(4), 'if2');
  const onBackup = await policy.candidates(t4('93.184.216.34'), named('a.example'));
  assert.deepEqual(brief(onBackup), ['if2/route']);
  policy.connected(named('a.example'), t4('93.184.216.34'), onBackup[0]); // a live flow on the backup
  // if1 returns: new flows (the same destination too: affinity stays inside the best role) go to if1
  monitor.set([loopback(), if1(), if2()]);
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('a.example'))), ['if1/role']);
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.35'), named('b.example'))), ['if1/role']);
});

test('15: the default roles (metered and cellular backup) hold, prefer beats normal, and without roles the kernel leads as before', async () => {
  {
    const { policy, kernelVia } = setup({ roles: { types: { cellular: { role: 'backup' } } }, types: { if2: 'cellular' } });
    kernelVia(IF2);
    assert.deepEqual(brief(await policy.candidates(t4('1.1.1.1'), named('x.example'))), ['if1/role']);
  }
  {
    const { policy, kernelVia } = setup({ roles: { metered: { role: 'backup' } }, metered: { if2: true } });
    kernelVia(IF2);
    assert.deepEqual(brief(await policy.candidates(t4('1.1.1.1'), named('x.example'))), ['if1/role']);
  }
  {
    const { policy, kernelVia } = setup({ roles: { interfaces: { 'if*': { role: 'normal' }, if1: { role: 'prefer' } } } });
    kernelVia(IF2);
    assert.deepEqual(brief(await policy.candidates(t4('1.1.1.1'), named('x.example'))), ['if1/role']);
  }
  {
    const { policy, kernelVia } = setup();
    kernelVia(IF2);
    assert.deepEqual(brief(await policy.candidates(t4('1.1.1.1'), named('x.example'))), ['if2/route', 'if1/fallback']);
  }
});

test('15: never takes no flow: the other interface does, and with only never left the flow is refused (HF_NO_EGRESS)', async () => {
  const { monitor, policy, kernelVia } = setup({ roles: { interfaces: { if2: { role: 'never' } } } });
  kernelVia(IF2);
  assert.deepEqual(brief(await policy.candidates(t4('1.1.1.1'), named('x.example'))), ['if1/role']);
  monitor.set([loopback(), if1({ carrier: false }), if2()]);
  const err = await refusal(policy.candidates(t4('1.1.1.1'), named('x.example')));
  assert.equal(err.code, HfCode.NO_EGRESS);
  assert.match(err.message, /role never/);
  // DNS is not asked through it either
  assert.deepEqual(policy.resolvingInterfaces(named('x.example')).map((i) => i.name), []);
});

test("15: a rule by CIDR and one by name suffix send flows via the named interface against the kernel's choice", async () => {
  const { policy, kernelVia } = setup({
    rules: [
      { to: '10.200.0.0/24', via: 'if1' },
      { to: '*.corp.example', via: ['wg0', 'if1'] },
      { to: 'only-wg.example', via: 'wg0' },
    ],
  });
  kernelVia(IF2);
  assert.deepEqual(brief(await policy.candidates(t4('10.200.0.1'), { host: '10.200.0.1', port: 80, isName: false })), ['if1/rule']);
  // the name matches as asked, whatever it resolved to (wg0 is not there: the next via entry)
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('git.corp.example'))), ['if1/rule']);
  // no rule: the kernel's choice
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('www.example'))), ['if2/route', 'if1/fallback']);
  // a rule whose via has no usable interface refuses; the flow never goes around it
  const err = await refusal(policy.candidates(t4('93.184.216.34'), named('only-wg.example')));
  assert.equal(err.code, HfCode.NO_EGRESS);
  assert.match(err.message, /rules\.2 allows only wg0/);
});

test('15: DNS follows: a name is resolved with the interfaces its rule or role picks', async () => {
  const { policy } = setup({ rules: [{ to: '*.corp.example', via: 'if1' }], roles: { interfaces: { if1: { role: 'backup' } } } });
  // roles alone: if1 is backup, so if2's DNS; the rule narrows to if1 (backup, but the only one allowed)
  assert.deepEqual(policy.resolvingInterfaces(named('www.example')).map((i) => i.name), ['if2']);
  assert.deepEqual(policy.resolvingInterfaces(named('git.corp.example')).map((i) => i.name), ['if1']);
});

test('15: a reload replaces roles and rules for new flows; what was placed stays placed', async () => {
  const { policy, book, kernelVia } = setup();
  kernelVia(IF2);
  const before = await policy.candidates(t4('1.1.1.1'), named('x.example'));
  assert.deepEqual(brief(before), ['if2/route', 'if1/fallback']);
  book.configure({ interfaces: { if2: { role: 'backup' } }, types: {}, metered: {} });
  policy.configure({ affinity: { mode: 'host', lingerMs: 30_000 }, rules: compileRules([{ to: '1.1.1.2', via: 'if2' }]) });
  assert.deepEqual(brief(await policy.candidates(t4('1.1.1.1'), named('x.example'))), ['if1/role']);
  // a rule may send a flow to a backup: via limits the interfaces, roles order inside
  assert.deepEqual(brief(await policy.candidates(t4('1.1.1.2'), named('y.example'))), ['if2/route']);
  assert.equal(policy.placementOf(if2()).role, 'backup');
  assert.deepEqual(brief(before), ['if2/route', 'if1/fallback'], 'the earlier answer is not touched');
});

test('15: a rule may send flows and DNS through a VPN that has only its own routes (no default route)', async () => {
  const wg0 = iface('wg0', { index: 9, addresses: ['10.66.0.2/32'] });
  const { policy, kernelVia } = setup({ extra: [wg0], types: { wg0: 'vpn' }, rules: [{ to: '*.corp.example', via: 'vpn' }] });
  kernelVia(IF2); // the name resolved to a public address: the kernel would use if2
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('git.corp.example'))), ['wg0/rule']);
  assert.deepEqual(policy.resolvingInterfaces(named('git.corp.example')).map((i) => i.name), ['wg0'], "the company's names ask wg0's DNS");
  // without a rule, an interface without a default route takes nothing it was not routed
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('www.example'))), ['if2/route', 'if1/fallback']);
  assert.deepEqual(policy.resolvingInterfaces(named('www.example')).map((i) => i.name), ['if2', 'if1']);
});

test("15: a destination on the backup's own subnet (the tether's web page) still goes there; never still refuses", async () => {
  const { policy, kernelVia } = setup({ roles: { interfaces: { if2: { role: 'backup' } } } });
  kernelVia(IF2); // 10.0.2.1 is on if2's subnet: the kernel's connected route
  assert.deepEqual(brief(await policy.candidates(t4('10.0.2.1', 80), { host: '10.0.2.1', port: 80, isName: false })), ['if2/route']);
  assert.deepEqual(brief(await policy.candidates(t4('93.184.216.34'), named('a.example'))), ['if1/role'], 'elsewhere the role holds');
  const never = setup({ roles: { interfaces: { if2: { role: 'never' } } } });
  never.kernelVia(IF2);
  assert.deepEqual(brief(await never.policy.candidates(t4('10.0.2.1', 80), { host: '10.0.2.1', port: 80, isName: false })), ['if1/role']);
});
