// Cancel (src/cancel.ts): a tunnel's cheaper stand-in for an AbortController. It must keep the
// promises the dial path relies on from an AbortSignal: each listener runs once, with the reason
// readable; a removed listener never runs; one added after the abort never runs; a second abort
// changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cancel } from '../../src/cancel.js';

test('Cancel: abort runs every listener once, in order, with aborted and reason set', () => {
  const c = new Cancel();
  assert.equal(c.aborted, false);
  assert.equal(c.reason, undefined);
  const seen: string[] = [];
  const reason = new Error('client left');
  const a = () => seen.push(`a:${c.aborted}:${(c.reason as Error).message}`);
  const b = () => seen.push('b');
  const d = () => seen.push('d');
  c.addEventListener('abort', a);
  c.addEventListener('abort', b, { once: true });
  c.addEventListener('abort', d);
  c.addEventListener('abort', a); // as on an EventTarget: the same listener twice is once
  c.abort(reason);
  assert.deepEqual(seen, ['a:true:client left', 'b', 'd']);
  assert.equal(c.aborted, true);
  assert.equal(c.reason, reason);
  c.abort(new Error('again'));
  assert.deepEqual(seen, ['a:true:client left', 'b', 'd'], 'a second abort runs nothing');
  assert.equal(c.reason, reason, 'and keeps the first reason');
});

test('Cancel: a removed listener never runs, alone or among others', () => {
  const alone = new Cancel();
  let ran = 0;
  const fn = () => ran++;
  alone.addEventListener('abort', fn);
  alone.removeEventListener('abort', fn);
  alone.abort(new Error('x'));
  assert.equal(ran, 0);

  const many = new Cancel();
  const seen: string[] = [];
  const a = () => seen.push('a');
  const b = () => seen.push('b');
  const d = () => seen.push('d');
  many.addEventListener('abort', a);
  many.addEventListener('abort', b);
  many.addEventListener('abort', d);
  many.removeEventListener('abort', b);
  many.removeEventListener('abort', () => {}); // one it never had: nothing
  many.abort(new Error('x'));
  assert.deepEqual(seen, ['a', 'd']);
});

test('Cancel: a listener added after the abort never runs (read .aborted instead)', () => {
  const c = new Cancel();
  c.abort(new Error('gone'));
  let ran = 0;
  c.addEventListener('abort', () => ran++);
  c.abort(new Error('again'));
  assert.equal(ran, 0);
  assert.equal(c.aborted, true);
});

test('Cancel and AbortSignal alike: an object listener has its handleEvent called once, with itself as this', () => {
  // the dialer listens with its own Dialing object; both signal kinds must call it the same way
  for (const make of [() => new Cancel(), () => new AbortController()]) {
    const c = make();
    const signal = c instanceof Cancel ? c : c.signal;
    const seen: string[] = [];
    const obj = {
      name: 'dialing',
      handleEvent(this: { name: string }) {
        seen.push(this.name);
      },
    };
    const removed = { handleEvent: () => seen.push('removed') };
    signal.addEventListener('abort', obj, { once: true });
    signal.addEventListener('abort', removed, { once: true });
    signal.removeEventListener('abort', removed);
    c.abort(new Error('x'));
    c.abort(new Error('again'));
    assert.deepEqual(seen, ['dialing'], `${c.constructor.name}`);
  }
});
