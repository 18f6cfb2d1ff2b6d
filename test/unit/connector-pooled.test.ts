// The connector's way for callers that keep connections (the HTTP forwarder's per-interface
// pools, issue 13): openOrReuse places a request on a held connection of the policy's first
// interface or dials a new one raced across the candidates; pinnedConnect is the undici
// `connect` hook that hands a pool its pinned sockets. Fakes for resolver, policy and dialer.
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import type { Destination, Dialer, Egress, EgressPolicy, Target } from '../../src/contracts.js';
import type { Resolver } from '../../src/dns.js';
import { createConnector } from '../../src/egress/connector.js';
import { HfCode, HoldfastError, hfCodeOf } from '../../src/errors.js';

const eg = (n: number): Egress => ({ ifname: `if${n}`, source: `10.0.${n}.2`, family: 4, placedBy: n === 1 ? 'route' : 'fallback' });
const if1 = eg(1);
const if2 = eg(2);
const dst: Destination = { host: 'example.test', port: 80, isName: true };
const targets: Target[] = [
  { ip: '192.0.2.7', family: 4, port: 80 },
  { ip: '192.0.2.8', family: 4, port: 80 },
];

function fakes(t: TestContext, opts: { candidates?: Egress[]; dial?: (target: Target, egress: Egress) => Promise<Socket> } = {}) {
  const log: string[] = [];
  const resolver: Resolver = {
    async resolve(d) {
      log.push(`resolve ${d.host}`);
      return targets;
    },
  };
  const policy: EgressPolicy = {
    async candidates(target) {
      log.push(`candidates ${target.ip}`);
      return opts.candidates ?? [if1, if2];
    },
    resolvingInterfaces: () => [],
    lease: (_d, target, egress) => {
      log.push(`leased ${target.ip} ${egress.ifname}`);
      return { release: () => log.push(`released ${target.ip} ${egress.ifname}`) };
    },
    failed: (ifname, code) => log.push(`failed ${ifname} ${code}`),
  };
  const sockets: Socket[] = [];
  const dialer: Dialer = {
    binder: 'source',
    dial(target, egress) {
      log.push(`dial ${target.ip}:${target.port} ${egress.ifname}`);
      if (opts.dial) return opts.dial(target, egress);
      const s = new Socket();
      sockets.push(s);
      return Promise.resolve(s);
    },
  };
  t.after(() => sockets.forEach((s) => s.destroy()));
  const connector = createConnector(resolver, policy, dialer, { fallbackDelayMs: 50 });
  return { connector, log, sockets };
}

test('openOrReuse: a held free connection on the first interface is the answer, and nothing is dialed', async (t) => {
  const { connector, log } = fakes(t);
  const held = { id: 'conn-1' };
  const asked: string[] = [];
  const up = await connector.openOrReuse(dst, new AbortController().signal, (egress, target) => {
    asked.push(`${egress.ifname} ${target.ip}`);
    return egress === if1 ? held : undefined;
  });
  assert.ok('reused' in up);
  assert.equal(up.reused, held);
  assert.equal(up.egress, if1);
  assert.deepEqual(up.target, targets[0]);
  assert.equal(up.attempts, '');
  // only the policy's first interface for the first address is asked about
  assert.deepEqual(asked, ['if1 192.0.2.7']);
  assert.deepEqual(log, ['resolve example.test', 'candidates 192.0.2.7']);
  // affinity is fed only when the caller says the flow began (a lease), and given back with it
  const lease = connector.lease(dst, up);
  assert.deepEqual(log.slice(2), ['leased 192.0.2.7 if1']);
  lease.release();
  assert.deepEqual(log.slice(2), ['leased 192.0.2.7 if1', 'released 192.0.2.7 if1']);
});

test('openOrReuse: without a held connection it dials the first address, racing the candidates', async (t) => {
  // if1 is unreachable: the race goes on to if2, and the policy hears of if1's failure
  const { connector, log, sockets } = fakes(t, {
    dial: async (_target, egress) => {
      if (egress === if1) throw new HoldfastError(HfCode.NET_UNREACHABLE, 'connect via if1: ENETUNREACH');
      const s = new Socket();
      t.after(() => s.destroy());
      return s;
    },
  });
  assert.equal(sockets.length, 0);
  const up = await connector.openOrReuse(dst, new AbortController().signal, () => undefined);
  assert.ok(!('reused' in up));
  assert.ok(up.socket instanceof Socket);
  assert.equal(up.egress, if2);
  assert.deepEqual(up.target, targets[0]);
  assert.equal(up.attempts, `if1 10.0.1.2: ${HfCode.NET_UNREACHABLE}`);
  assert.deepEqual(log, [
    'resolve example.test',
    'candidates 192.0.2.7',
    'dial 192.0.2.7:80 if1',
    `failed if1 ${HfCode.NET_UNREACHABLE}`,
    'dial 192.0.2.7:80 if2',
  ]);
});

test('openOrReuse: a refused dial keeps its own error (one candidate), and the policy is not blamed', async (t) => {
  const { connector, log } = fakes(t, {
    candidates: [if1],
    dial: async () => {
      throw new HoldfastError(HfCode.REFUSED, 'connect via if1: ECONNREFUSED');
    },
  });
  await assert.rejects(connector.openOrReuse(dst, new AbortController().signal, () => undefined), (err) => {
    assert.equal(hfCodeOf(err), HfCode.REFUSED);
    return true;
  });
  assert.ok(!log.some((l) => l.startsWith('failed')), log.join(', '));
});

function connectOnce(hook: ReturnType<ReturnType<typeof createConnector>['pinnedConnect']>, hostname: string, port: string) {
  return new Promise<{ err: Error | null; socket: Socket | null; sync: boolean }>((resolve) => {
    let returned = false;
    hook({ hostname, port }, (err, socket) => resolve({ err, socket, sync: !returned }));
    returned = true;
  });
}

test('pinnedConnect: hands over the dialed socket once (never synchronously), then dials on the same egress', async (t) => {
  const { connector, log, sockets } = fakes(t);
  const first = new Socket();
  t.after(() => first.destroy());
  const hook = connector.pinnedConnect(if2, first);
  const a = await connectOnce(hook, '192.0.2.7', '80');
  assert.equal(a.err, null);
  assert.equal(a.socket, first);
  assert.equal(a.sync, false, 'undici must not be called back before connect returns');
  assert.deepEqual(log, []);
  // the pool lost that connection and needs another: a new dial, pinned to if2, to the same address
  const b = await connectOnce(hook, '2001:db8::7', '8080');
  assert.equal(b.err, null);
  assert.equal(b.socket, sockets[0]);
  assert.deepEqual(log, ['dial 2001:db8::7:8080 if2']);
});

test('pinnedConnect: a name is refused (no hostname reaches a pinned dial), a path failure reaches the policy', async (t) => {
  const { connector, log } = fakes(t, {
    dial: async () => {
      throw new HoldfastError(HfCode.DIAL_TIMEOUT, 'connect via if1: no answer');
    },
  });
  const hook = connector.pinnedConnect(if1);
  const named = await connectOnce(hook, 'example.test', '80');
  assert.equal(hfCodeOf(named.err), HfCode.BAD_REQUEST);
  assert.equal(named.socket, null);
  assert.deepEqual(log, []);
  const timedOut = await connectOnce(hook, '192.0.2.7', '80');
  assert.equal(hfCodeOf(timedOut.err), HfCode.DIAL_TIMEOUT);
  assert.deepEqual(log, ['dial 192.0.2.7:80 if1', `failed if1 ${HfCode.DIAL_TIMEOUT}`]);
});

test('pinnedConnect: a first socket the pool never asked for is destroyed by unclaimed(), once', async (t) => {
  const { connector } = fakes(t);
  const first = new Socket();
  t.after(() => first.destroy());
  const hook = connector.pinnedConnect(if1, first);
  assert.equal(hook.unclaimed(), true);
  assert.equal(first.destroyed, true);
  assert.equal(hook.unclaimed(), false);
  // a claimed one is the pool's: unclaimed() leaves it alone
  const second = new Socket();
  t.after(() => second.destroy());
  const hook2 = connector.pinnedConnect(if1, second);
  assert.equal((await connectOnce(hook2, '192.0.2.7', '80')).socket, second);
  assert.equal(hook2.unclaimed(), false);
  assert.equal(second.destroyed, false);
});
