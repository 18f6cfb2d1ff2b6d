// dialAcross: Happy Eyeballs across interfaces (DESIGN rule 6), with a fake Dialer whose dials
// the test settles by hand and node:test's mocked setTimeout for the fallback delay.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { Cancel } from '../../src/cancel.js';
import type { CancelSignal, Dialer, Egress, Target } from '../../src/contracts.js';
import { blamesPath, dialAcross } from '../../src/egress/dial.js';
import { EgressUnreachableError, HfCode, HoldfastError } from '../../src/errors.js';
import { deferred, flush, type Deferred } from '../helpers/fakes.js';

const DELAY = 50;
const target: Target = { ip: '93.184.216.34', family: 4, port: 443 };
const eg = (n: number): Egress => ({
  ifname: `if${n}`,
  source: `10.0.${n}.2`,
  family: 4,
  placedBy: n === 1 ? 'route' : 'fallback',
});
const if1 = eg(1);
const if2 = eg(2);
const if3 = eg(3);

interface Call {
  readonly egress: Egress;
  readonly signal: CancelSignal | undefined;
  readonly d: Deferred<Socket>;
}

/** A Dialer whose every dial waits for the test; dials ignore their signal unless told. */
class FakeDialer implements Dialer {
  readonly binder = 'source' as const;
  readonly calls: Call[] = [];
  constructor(readonly honourAbort = false) {}
  dial(t: Target, egress: Egress, signal?: CancelSignal): Promise<Socket> {
    assert.deepEqual(t, target, 'dialed the target it was given');
    const d = deferred<Socket>();
    if (this.honourAbort) signal?.addEventListener('abort', () => d.reject(signal.reason), { once: true });
    this.calls.push({ egress, signal, d });
    return d.promise;
  }
  get started(): string[] {
    return this.calls.map((c) => c.egress.ifname);
  }
}

function socket(t: TestContext): Socket {
  const s = new Socket();
  t.after(() => s.destroy());
  return s;
}

const fail = (code: HfCode) => new HoldfastError(code, `connect via test: ${code}`);

function setup(t: TestContext, honourAbort = false) {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const dialer = new FakeDialer(honourAbort);
  const failed: string[] = [];
  const onFailed = (e: Egress, err: unknown) => failed.push(`${e.ifname}:${(err as { code?: string }).code}`);
  return { dialer, failed, onFailed };
}

// ---------------------------------------------------------------------------------------------

test('blamesPath: unreachable and timeout blame the path; refused and others do not', () => {
  assert.equal(blamesPath(fail(HfCode.NET_UNREACHABLE)), true);
  assert.equal(blamesPath(fail(HfCode.HOST_UNREACHABLE)), true);
  assert.equal(blamesPath(fail(HfCode.DIAL_TIMEOUT)), true);
  assert.equal(blamesPath(Object.assign(new Error('x'), { code: 'ENETUNREACH' })), true);
  assert.equal(blamesPath(fail(HfCode.REFUSED)), false);
  assert.equal(blamesPath(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })), false);
  assert.equal(blamesPath(fail(HfCode.INTERNAL)), false);
  assert.equal(blamesPath(new Error('no code')), false);
});

test('primary wins: no fallback starts, even after the delay', async (t) => {
  const { dialer, failed, onFailed } = setup(t);
  const s = socket(t);
  const p = dialAcross(dialer, target, [if1, if2], DELAY, undefined, onFailed);
  assert.deepEqual(dialer.started, ['if1']);
  dialer.calls[0].d.resolve(s);
  const r = await p;
  assert.equal(r.socket, s);
  assert.equal(r.egress, if1);
  assert.equal(r.attempts, '');
  t.mock.timers.tick(10 * DELAY);
  await flush();
  assert.deepEqual(dialer.started, ['if1']);
  assert.equal(s.destroyed, false);
  assert.deepEqual(failed, []);
});

test("primary silent past the fallback delay: the second starts and wins; the primary's late socket is destroyed", async (t) => {
  const { dialer } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2], DELAY);
  t.mock.timers.tick(DELAY - 1);
  await flush();
  assert.deepEqual(dialer.started, ['if1'], 'not before the delay');
  t.mock.timers.tick(1);
  assert.deepEqual(dialer.started, ['if1', 'if2']);
  const won = socket(t);
  dialer.calls[1].d.resolve(won);
  const r = await p;
  assert.equal(r.egress, if2);
  assert.equal(r.socket, won);
  assert.equal(dialer.calls[0].signal?.aborted, true, 'the primary was told it lost');
  assert.equal(won.destroyed, false);
  const late = socket(t);
  dialer.calls[0].d.resolve(late);
  await flush();
  assert.equal(late.destroyed, true);
});

test('fallbacks start one delay apart while earlier attempts stay silent', async (t) => {
  const { dialer } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2, if3], DELAY);
  t.mock.timers.tick(DELAY);
  assert.deepEqual(dialer.started, ['if1', 'if2']);
  t.mock.timers.tick(DELAY - 1);
  assert.deepEqual(dialer.started, ['if1', 'if2']);
  t.mock.timers.tick(1);
  assert.deepEqual(dialer.started, ['if1', 'if2', 'if3']);
  // the first attempt may still win
  const s = socket(t);
  dialer.calls[0].d.resolve(s);
  const r = await p;
  assert.equal(r.egress, if1);
  assert.equal(dialer.calls[1].signal?.aborted, true);
  assert.equal(dialer.calls[2].signal?.aborted, true);
});

test(
  "the winner's signal is not aborted",
  async (t) => {
    const { dialer } = setup(t);
    const p = dialAcross(dialer, target, [if1, if2], DELAY);
    t.mock.timers.tick(DELAY);
    const s = socket(t);
    dialer.calls[1].d.resolve(s);
    assert.equal((await p).egress, if2);
    assert.equal(dialer.calls[0].signal?.aborted, true, 'the loser is aborted');
    assert.equal(dialer.calls[1].signal?.aborted, false, 'the winner is not');
  },
);

test('primary fails with HF_NET_UNREACHABLE: the second starts at once and wins', async (t) => {
  const { dialer, failed, onFailed } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2], DELAY, undefined, onFailed);
  dialer.calls[0].d.reject(fail(HfCode.NET_UNREACHABLE));
  await flush();
  assert.deepEqual(dialer.started, ['if1', 'if2'], 'no wait for the delay');
  const s = socket(t);
  dialer.calls[1].d.resolve(s);
  const r = await p;
  assert.equal(r.egress, if2);
  assert.equal(r.attempts, 'if1 10.0.1.2: HF_NET_UNREACHABLE');
  assert.deepEqual(failed, ['if1:HF_NET_UNREACHABLE']);
});

test('a failure after a fallback started does not start a third before its time', async (t) => {
  const { dialer } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2, if3], DELAY);
  t.mock.timers.tick(DELAY);
  assert.deepEqual(dialer.started, ['if1', 'if2']);
  dialer.calls[0].d.reject(fail(HfCode.DIAL_TIMEOUT));
  await flush();
  assert.deepEqual(dialer.started, ['if1', 'if2', 'if3'], 'a path failure starts the next at once');
  const s = socket(t);
  dialer.calls[1].d.resolve(s);
  assert.equal((await p).egress, if2);
  assert.equal(dialer.calls[2].signal?.aborted, true);
});

test('ECONNREFUSED (HF_REFUSED): no fallback, rejected with HF_REFUSED', async (t) => {
  const { dialer, failed, onFailed } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2], DELAY, undefined, onFailed);
  dialer.calls[0].d.reject(fail(HfCode.REFUSED));
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof EgressUnreachableError, `got ${String(err)}`);
    assert.equal(err.code, 'HF_REFUSED');
    assert.equal(err.attempts, 'if1 10.0.1.2: HF_REFUSED');
    return true;
  });
  t.mock.timers.tick(10 * DELAY);
  await flush();
  assert.deepEqual(dialer.started, ['if1'], 'the server answered: no other path is tried');
  assert.deepEqual(failed, ['if1:HF_REFUSED']);
});

test('an OS ECONNREFUSED error (not yet wrapped) also ends the race', async (t) => {
  const { dialer } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2], DELAY);
  dialer.calls[0].d.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
  await assert.rejects(p, { code: 'HF_REFUSED' });
  assert.deepEqual(dialer.started, ['if1']);
});

test('all fail: EgressUnreachableError whose attempts name each interface and code', async (t) => {
  const { dialer, failed, onFailed } = setup(t);
  const p = dialAcross(dialer, target, [if1, if2, if3], DELAY, undefined, onFailed);
  dialer.calls[0].d.reject(fail(HfCode.NET_UNREACHABLE));
  await flush();
  dialer.calls[1].d.reject(fail(HfCode.DIAL_TIMEOUT));
  await flush();
  dialer.calls[2].d.reject(fail(HfCode.HOST_UNREACHABLE));
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof EgressUnreachableError, `got ${String(err)}`);
    assert.equal(
      err.attempts,
      'if1 10.0.1.2: HF_NET_UNREACHABLE; if2 10.0.2.2: HF_DIAL_TIMEOUT; if3 10.0.3.2: HF_HOST_UNREACHABLE',
    );
    assert.equal(err.code, 'HF_HOST_UNREACHABLE', 'the last failure gives the code');
    return true;
  });
  assert.deepEqual(failed, ['if1:HF_NET_UNREACHABLE', 'if2:HF_DIAL_TIMEOUT', 'if3:HF_HOST_UNREACHABLE']);
});

test('all started, the later ones fail first: the race waits for the silent primary', async (t) => {
  const { dialer } = setup(t);
  let settled = false;
  const p = dialAcross(dialer, target, [if1, if2], DELAY);
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  t.mock.timers.tick(DELAY);
  dialer.calls[1].d.reject(fail(HfCode.NET_UNREACHABLE));
  await flush();
  assert.equal(settled, false, 'the primary may still connect');
  const s = socket(t);
  dialer.calls[0].d.resolve(s);
  const r = await p;
  assert.equal(r.egress, if1);
  assert.equal(r.attempts, 'if2 10.0.2.2: HF_NET_UNREACHABLE');
});

/** The flow's way to call a dial off: an AbortController's signal, or the cheaper Cancel a tunnel uses. */
const cancellers = [
  [
    'AbortSignal',
    () => {
      const ac = new AbortController();
      return { signal: ac.signal as CancelSignal, abort: (r: Error) => ac.abort(r) };
    },
  ],
  [
    'Cancel',
    () => {
      const c = new Cancel();
      return { signal: c as CancelSignal, abort: (r: Error) => c.abort(r) };
    },
  ],
] as const;

/** The race's answer to an abort: a HoldfastError whose cause is the abort's reason. */
async function rejectsWithCause(p: Promise<unknown>, reason: Error): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof HoldfastError);
    assert.equal((err as Error & { cause?: unknown }).cause, reason);
    return true;
  });
}

for (const [name, make] of cancellers) {
  test(`abort (${name}) stops everything: attempts are aborted, nothing new starts, late sockets are destroyed`, async (t) => {
    const { dialer } = setup(t);
    const ac = make();
    const p = dialAcross(dialer, target, [if1, if2, if3], DELAY, ac.signal);
    t.mock.timers.tick(DELAY);
    assert.deepEqual(dialer.started, ['if1', 'if2']);
    const reason = new Error('client left');
    ac.abort(reason);
    await rejectsWithCause(p, reason);
    assert.equal(dialer.calls[0].signal?.aborted, true);
    assert.equal(dialer.calls[1].signal?.aborted, true);
    t.mock.timers.tick(10 * DELAY);
    await flush();
    assert.deepEqual(dialer.started, ['if1', 'if2'], 'if3 never starts');
    const late = socket(t);
    dialer.calls[0].d.resolve(late);
    await flush();
    assert.equal(late.destroyed, true);
  });

  test(`an already aborted signal (${name}) dials nothing`, async (t) => {
    const { dialer } = setup(t);
    const ac = make();
    ac.abort(new Error('gone'));
    await assert.rejects(dialAcross(dialer, target, [if1, if2], DELAY, ac.signal));
    assert.deepEqual(dialer.started, []);
  });

  test(`a single candidate aborted (${name}) rejects at once with the abort's reason as cause`, async (t) => {
    const { dialer, failed, onFailed } = setup(t, true);
    const ac = make();
    const p = dialAcross(dialer, target, [if1], DELAY, ac.signal, onFailed);
    assert.deepEqual(dialer.started, ['if1']);
    const reason = new Error('client left');
    ac.abort(reason);
    await rejectsWithCause(p, reason);
    assert.deepEqual(failed, [], 'an abort blames no interface');
  });
}

test('a dialer that honours abort: a primary that stalled past the delay and lost is reported once, as a timeout', async (t) => {
  const { dialer, failed, onFailed } = setup(t, true);
  const p = dialAcross(dialer, target, [if1, if2], DELAY, undefined, onFailed);
  t.mock.timers.tick(DELAY);
  const s = socket(t);
  dialer.calls[1].d.resolve(s);
  assert.equal((await p).egress, if2);
  await flush();
  // the stalled primary is named once (so the policy backs it off), and its abort adds nothing
  assert.deepEqual(failed, ['if1:HF_DIAL_TIMEOUT']);
});

test('a single candidate: the dial result, or its own error and onFailed', async (t) => {
  const { dialer, failed, onFailed } = setup(t);
  const s = socket(t);
  const ok = dialAcross(dialer, target, [if1], DELAY, undefined, onFailed);
  dialer.calls[0].d.resolve(s);
  const r = await ok;
  assert.equal(r.socket, s);
  assert.equal(r.attempts, '');

  const bad = dialAcross(dialer, target, [if2], DELAY, undefined, onFailed);
  const err = fail(HfCode.DIAL_TIMEOUT);
  dialer.calls[1].d.reject(err);
  await assert.rejects(bad, (e: unknown) => e === err);
  assert.deepEqual(failed, ['if2:HF_DIAL_TIMEOUT']);
});
