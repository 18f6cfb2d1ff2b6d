// connector.open has two ways to the dial: the general one (resolve, the loop check, the policy's
// candidates, the race or the lone dial, then the lease), and the short one most flows take (an
// address literal the resolver answers at once, and a route the policy answers at once: the
// result is made and leased in the dial's own step). Each case here runs both ways, with the
// same fakes except for those two shortcuts, and both must give the same outcome: the same
// result or error, the same calls to the resolver, policy and dialer, one lease per success, no
// socket left behind.
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { Cancel } from '../../src/cancel.js';
import type { CancelSignal, Destination, Dialer, Egress, EgressPolicy, Target } from '../../src/contracts.js';
import type { Resolver } from '../../src/dns.js';
import { literalTarget } from '../../src/dns.js';
import { createConnector } from '../../src/egress/connector.js';
import { HfCode, HoldfastError, LoopError, hfCodeOf } from '../../src/errors.js';
import { deferred } from '../helpers/fakes.js';

const eg = (n: number): Egress => ({ ifname: `if${n}`, source: `10.0.${n}.2`, family: 4, placedBy: n === 1 ? 'route' : 'fallback' });
const if1 = eg(1);
const if2 = eg(2);
const dst: Destination = { host: '192.0.2.7', port: 443, isName: false };

type Way = 'general' | 'short';

interface Opts {
  candidates?: Egress[];
  /** the policy's answer comes later (a route not cached): choose returns a promise */
  later?: boolean;
  /** the policy throws this */
  policyError?: Error;
  /** dial outcome per interface: a socket (default), or an error */
  dialError?: Partial<Record<string, Error>>;
  /** dials wait until aborted */
  hang?: boolean;
  refuse?: boolean;
  leaseThrows?: boolean;
}

function fakes(t: TestContext, way: Way, o: Opts = {}) {
  const log: string[] = [];
  /** which entry points were used (apart from the log: the two ways differ here on purpose) */
  const used = new Set<string>();
  const sockets: Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  const resolver: Resolver = {
    resolve: (d) => {
      used.add('resolve');
      log.push(`resolve ${d.host}`);
      // a name (only one test asks for one) has one address
      return Promise.resolve([literalTarget(d.host, d.port) ?? { ip: '192.0.2.9', family: 4, port: d.port }]);
    },
    ...(way === 'short'
      ? {
          resolveNow: (d: Destination) => {
            const lit = literalTarget(d.host, d.port);
            if (!lit) return undefined;
            log.push(`resolve ${d.host}`);
            return [lit];
          },
        }
      : {}),
  };
  const choose = (tg: Target): Egress[] => {
    log.push(`candidates ${tg.ip}`);
    if (o.policyError) throw o.policyError;
    return o.candidates ?? [if1];
  };
  const policy: EgressPolicy = {
    candidates: (tg) => {
      used.add('candidates');
      try {
        const c = choose(tg);
        return o.later ? new Promise((r) => setImmediate(r, c)) : Promise.resolve(c);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    ...(way === 'short'
      ? { choose: (tg: Target) => (o.later ? new Promise<Egress[]>((r) => setImmediate(r, choose(tg))) : choose(tg)) }
      : {}),
    resolvingInterfaces: () => [],
    lease: (_d, tg, egress) => {
      log.push(`leased ${tg.ip} ${egress.ifname}`);
      if (o.leaseThrows) throw new Error('lease broke');
      return { release: () => log.push(`released ${tg.ip} ${egress.ifname}`) };
    },
    failed: (ifname, code) => log.push(`failed ${ifname} ${code}`),
  };
  const dialer: Dialer = {
    binder: 'source',
    dial(tg, egress, signal?: CancelSignal) {
      log.push(`dial ${tg.ip}:${tg.port} ${egress.ifname}`);
      const err = o.dialError?.[egress.ifname];
      if (err) return Promise.reject(err);
      const s = new Socket();
      sockets.push(s);
      if (!o.hang) return Promise.resolve(s);
      const d = deferred<Socket>();
      signal?.addEventListener('abort', () => {
        s.destroy();
        d.reject(signal.reason);
      });
      return d.promise;
    },
  };
  const connector = createConnector(resolver, policy, dialer, {
    fallbackDelayMs: 20,
    refuse: o.refuse ? () => true : undefined,
  });
  return { connector, log, sockets, used };
}

/** Run `body` both ways and compare what it returns. */
async function bothWays<T>(t: TestContext, o: Opts, body: (f: ReturnType<typeof fakes>) => Promise<T>): Promise<T> {
  const general = await body(fakes(t, 'general', o));
  const short = await body(fakes(t, 'short', o));
  assert.deepEqual(short, general, 'the short way gives what the general way gives');
  return short;
}

const unreachable = () => new HoldfastError(HfCode.NET_UNREACHABLE, 'connect via test: ENETUNREACH');

test('one candidate: the connected socket, its placement, one lease; the same both ways', async (t) => {
  const seen = await bothWays(t, {}, async ({ connector, log, sockets }) => {
    const r = await connector.open(dst, new Cancel());
    assert.equal(r.socket, sockets[0]);
    r.lease.release();
    return { egress: r.egress.ifname, target: r.target, attempts: r.attempts, local: r.localAddress, log };
  });
  assert.deepEqual(seen.log, ['resolve 192.0.2.7', 'candidates 192.0.2.7', 'dial 192.0.2.7:443 if1', 'leased 192.0.2.7 if1', 'released 192.0.2.7 if1']);
  assert.equal(seen.local, '10.0.1.2');
});

test('the short way is taken when both shortcuts answer: neither resolve nor candidates is asked', async (t) => {
  const short = fakes(t, 'short');
  (await short.connector.open(dst)).lease.release();
  assert.deepEqual([...short.used], []);
  const general = fakes(t, 'general');
  (await general.connector.open(dst)).lease.release();
  assert.deepEqual([...general.used].sort(), ['candidates', 'resolve']);
  // a name needs a lookup: the general way, even with both shortcuts
  const named = fakes(t, 'short');
  const r = await named.connector.open({ host: 'example.test', port: 443, isName: true }).catch((e: unknown) => e);
  assert.ok(named.used.has('resolve'), `a name goes through resolve (${String(r)})`);
});

test('a route the policy answers later: the same result both ways', async (t) => {
  const seen = await bothWays(t, { later: true }, async ({ connector, log }) => {
    const r = await connector.open(dst);
    return { egress: r.egress.ifname, log };
  });
  assert.equal(seen.egress, 'if1');
});

test('two candidates, the first unreachable: the race goes on to the second, names the loser, backs it off', async (t) => {
  const seen = await bothWays(t, { candidates: [if1, if2], dialError: { if1: unreachable() } }, async ({ connector, log }) => {
    const r = await connector.open(dst, new Cancel());
    return { egress: r.egress.ifname, attempts: r.attempts, log };
  });
  assert.equal(seen.egress, 'if2');
  assert.match(seen.attempts, /if1 10\.0\.1\.2: HF_NET_UNREACHABLE/);
  assert.ok(seen.log.includes('failed if1 HF_NET_UNREACHABLE'));
  assert.deepEqual(seen.log.filter((l) => l.startsWith('leased')), ['leased 192.0.2.7 if2']);
});

test('holdfast itself: refused as a loop before any policy or dial', async (t) => {
  const seen = await bothWays(t, { refuse: true }, async ({ connector, log }) => {
    const err = await connector.open(dst).then(
      () => assert.fail('opened a loop'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof LoopError);
    return { message: (err as Error).message, log };
  });
  assert.ok(!seen.log.some((l) => l.startsWith('dial') || l.startsWith('candidates')));
});

test("the policy's failure is the promise's, never a throw, and nothing is dialed", async (t) => {
  const noRoute = new HoldfastError(HfCode.NET_UNREACHABLE, 'no route to 192.0.2.7');
  await bothWays(t, { policyError: noRoute }, async ({ connector, log }) => {
    let p: Promise<unknown> | undefined;
    assert.doesNotThrow(() => (p = connector.open(dst)));
    await assert.rejects(p!, (e: unknown) => e === noRoute);
    return { log };
  });
});

test('a lone dial that fails: its own error, and the interface backed off when it blames the path', async (t) => {
  const seen = await bothWays(t, { dialError: { if1: unreachable() } }, async ({ connector, log }) => {
    const err = await connector.open(dst, new Cancel()).then(
      () => assert.fail('opened'),
      (e: unknown) => e,
    );
    return { code: hfCodeOf(err), log };
  });
  assert.equal(seen.code, HfCode.NET_UNREACHABLE);
  assert.deepEqual(seen.log.slice(-1), ['failed if1 HF_NET_UNREACHABLE']);
});

test('called off while dialing: the attempt stopped, with the reason as its cause, nothing leased', async (t) => {
  const seen = await bothWays(t, { hang: true }, async ({ connector, log, sockets }) => {
    const cancel = new Cancel();
    const p = connector.open(dst, cancel);
    await new Promise((r) => setImmediate(r));
    const reason = new Error('client left');
    cancel.abort(reason);
    const err = await p.then(
      () => assert.fail('opened'),
      (e: unknown) => e,
    );
    assert.equal((err as { cause?: unknown }).cause, reason);
    assert.ok(sockets.every((s) => s.destroyed), 'the dial that was called off closed its socket');
    return { log, stopped: /stopped: client left/.test((err as Error).message) };
  });
  assert.equal(seen.stopped, true);
  assert.ok(!seen.log.some((l) => l.startsWith('leased') || l.startsWith('failed')));
});

test('a result that cannot be leased: the error is the promise\'s, and the socket it dialed is closed', async (t) => {
  await bothWays(t, { leaseThrows: true }, async ({ connector, sockets, log }) => {
    await assert.rejects(connector.open(dst), /lease broke/);
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0].destroyed, true, 'no caller holds it: closed');
    return { log };
  });
});
