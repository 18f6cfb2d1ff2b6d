// The system resolver's guard (issue 11): /etc/hosts names at once, a timeout per lookup, a cap
// on getaddrinfo calls that holds for threads (a slot is given back only when the call returns),
// one call per name, and queued lookups nobody waits for any more are never started.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { guardLookup, parseHosts, type LookupAnswer } from '../../src/resolver-guard.js';
import { deferred, type Deferred } from '../helpers/proc.js';

function hostsFile(t: TestContext, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-hosts-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'hosts');
  writeFileSync(f, text);
  return f;
}

/** A lookup that answers only when the test says so. */
function heldLookup() {
  const calls: { host: string; d: Deferred<LookupAnswer[]> }[] = [];
  return {
    calls,
    lookup: (host: string) => {
      const d = deferred<LookupAnswer[]>();
      calls.push({ host, d });
      return d.promise;
    },
  };
}

test('parseHosts: addresses and names, comments, several names per line, IPv6', () => {
  const m = parseHosts('# c\n127.0.0.1 localhost me.local  # x\n::1 localhost ip6-localhost\n\nbad line\n10.0.0.1\tMixed.Case.\n');
  assert.deepEqual(m.get('localhost'), [
    { address: '127.0.0.1', family: 4 },
    { address: '::1', family: 6 },
  ]);
  assert.deepEqual(m.get('mixed.case'), [{ address: '10.0.0.1', family: 4 }]);
  assert.equal(m.get('bad'), undefined);
});

test('11: hosts-file names answer at once while every lookup hangs; the file is read again when it changes', async (t) => {
  const f = hostsFile(t, '127.0.0.1 localhost\n');
  const held = heldLookup();
  const look = guardLookup({ settings: { timeoutMs: 60_000 }, maxConcurrent: 2, hostsFile: f, lookup: held.lookup });
  const hanging = ['a.test', 'b.test', 'c.test', 'd.test'].map((n) => look(n));
  for (const h of hanging) h.catch(() => {});
  assert.deepEqual(await look('LOCALHOST'), [{ address: '127.0.0.1', family: 4 }]);
  writeFileSync(f, '127.0.0.1 localhost\n10.1.2.3 added.test\n');
  assert.deepEqual(await look('added.test.'), [{ address: '10.1.2.3', family: 4 }]);
  assert.equal(held.calls.length, 2, 'only the cap of lookups reached getaddrinfo');
  for (const c of held.calls) c.d.resolve([]);
});

test('11: a lookup that does not answer fails with HF_DNS_TIMEOUT; its slot is held until the call returns', async (t) => {
  // the guard's timers are unref'd (they never hold a process up): keep this one alive meanwhile
  const keep = setInterval(() => {}, 1000);
  t.after(() => clearInterval(keep));
  const held = heldLookup();
  const look = guardLookup({ settings: { timeoutMs: 50 }, maxConcurrent: 1, hostsFile: hostsFile(t, ''), lookup: held.lookup });
  await assert.rejects(look('slow.test'), (e: Error & { code?: string }) => e.code === 'HF_DNS_TIMEOUT');
  assert.equal(look.running, 1, 'the call still runs (a thread is still blocked)');
  // another name queues behind it and, nobody answering, times out too
  await assert.rejects(look('next.test'), (e: Error & { code?: string }) => e.code === 'HF_DNS_TIMEOUT');
  assert.equal(held.calls.length, 1);
  // when the blocked call returns, the queued lookup nobody waits for is not started
  held.calls[0].d.resolve([{ address: '10.0.0.1', family: 4 }]);
  await new Promise((r) => setImmediate(r));
  assert.equal(look.running, 0);
  assert.equal(held.calls.length, 1, 'the abandoned lookup never ran');
  // and a fresh lookup runs at once
  const p = look('fresh.test');
  assert.equal(held.calls.length, 2);
  held.calls[1].d.resolve([{ address: '10.0.0.2', family: 4 }]);
  assert.deepEqual(await p, [{ address: '10.0.0.2', family: 4 }]);
});

test('11: concurrent lookups of one name share one call; the cap lets the queue through as calls return', async (t) => {
  const held = heldLookup();
  const look = guardLookup({ settings: { timeoutMs: 60_000 }, maxConcurrent: 2, hostsFile: hostsFile(t, ''), lookup: held.lookup });
  const same = [look('x.test'), look('X.test'), look('x.test')];
  const others = ['y.test', 'z.test', 'w.test'].map((n) => look(n));
  assert.deepEqual(held.calls.map((c) => c.host), ['x.test', 'y.test']);
  held.calls[0].d.resolve([{ address: '10.0.0.9', family: 4 }]);
  for (const r of await Promise.all(same)) assert.deepEqual(r, [{ address: '10.0.0.9', family: 4 }]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(held.calls.map((c) => c.host), ['x.test', 'y.test', 'z.test']);
  held.calls[1].d.reject(Object.assign(new Error('nope'), { code: 'ENOTFOUND' }));
  await assert.rejects(others[0], (e: Error & { code?: string }) => e.code === 'ENOTFOUND');
  await new Promise((r) => setImmediate(r));
  assert.equal(held.calls.length, 4);
  held.calls[2].d.resolve([]);
  held.calls[3].d.resolve([]);
  await Promise.all(others.slice(1));
});

test('11: a queue past its bound fails at once with HF_DNS_TIMEOUT', async (t) => {
  const held = heldLookup();
  const look = guardLookup({ settings: { timeoutMs: 60_000 }, maxConcurrent: 1, maxQueued: 2, hostsFile: hostsFile(t, ''), lookup: held.lookup });
  const ps = ['a', 'b', 'c'].map((n) => look(`${n}.test`));
  await assert.rejects(look('d.test'), (e: Error & { code?: string }) => e.code === 'HF_DNS_TIMEOUT');
  held.calls[0].d.resolve([]);
  await ps[0];
  held.calls[1].d.resolve([]);
  await ps[1];
  held.calls[2].d.resolve([]);
  await ps[2];
});
