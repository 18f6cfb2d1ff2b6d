// The dashboard's files as served: the page script (web/dashboard.js, type-checked by
// web/tsconfig.json at build) and the format functions it uses (/assets/format.js) parse, the
// page loads nothing from outside holdfast (offline) and runs no inline script (the CSP allows
// scripts from holdfast only); the event stream pushes what the page needs, when it needs it,
// and nothing to nobody. The page in a real browser: test/netns/dashboard.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import { FlowTable } from '../../src/flows.js';
import { formatScript, loadWebFiles } from '../../src/observe/dashboard-page.js';
import { hostIsOurs } from '../../src/inbound/host.js';
import { createDashboard } from '../../src/observe/dashboard.js';
import { formatBytes, formatRate } from '../../src/observe/format.js';
import { Stats } from '../../src/observe/stats.js';
import { FakeClock, FakeMonitor, iface, logSink, loopback, withIface } from '../helpers/fakes.js';

test('the page script and the format script parse, and format.js computes as the CLI does', () => {
  const files = loadWebFiles('1.6.32');
  const script = files.get('/assets/dashboard.js')!.body.toString();
  const format = files.get('/assets/format.js')!.body.toString();
  assert.doesNotThrow(() => new Function(script), 'the page script is valid JavaScript');
  // the page's script uses the format functions as globals: run format.js and call them
  const f = new Function(`${format}; return { formatBytes, formatRate, formatAge, isLinkLocal, isNotable, IEC };`)() as Record<string, unknown>;
  for (const name of ['formatBytes', 'formatRate', 'formatAge', 'isLinkLocal', 'isNotable']) assert.equal(typeof f[name], 'function', name);
  for (const n of [0, 1023, 1024, 5.5 * 1024 ** 2, 3 * 1024 ** 4]) {
    assert.equal((f.formatBytes as (n: number) => string)(n), formatBytes(n));
    assert.equal((f.formatRate as (n: number) => string)(n), formatRate(n));
  }
  assert.equal(formatScript(), format);
});

test('the dashboard loads nothing from outside holdfast, and has no inline script', () => {
  const files = loadWebFiles('1.6.32');
  const html = files.get('/')!.body.toString();
  const refs = [...html.matchAll(/\b(?:src|href)="([^"]*)"/g)].map((m) => m[1]);
  assert.ok(refs.length >= 6, `page references: ${refs.join(' ')}`);
  for (const r of refs) assert.match(r, /^(\/[^/]|data:)/, `${r} is served by holdfast itself`);
  for (const r of ['/assets/uplot.js?v=1.6.32', '/assets/uplot.css?v=1.6.32', '/assets/dashboard.css', '/assets/format.js', '/assets/dashboard.js']) {
    assert.ok(refs.includes(r), `the page asks for ${r}`);
  }
  assert.doesNotMatch(html, /<script>|<style>|\{\{/, 'no inline script or style, no placeholder left');
  assert.doesNotMatch(files.get('/assets/dashboard.css')!.body.toString(), /@import|url\(\s*['"]?https?:/i);
});

/** A tiny response double that records what a handler wrote. */
function record(method: string, host: string | undefined): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const dash = createDashboard({} as Stats); // '/' and the assets never touch the stats
  return new Promise((resolve) => {
    let status = 0;
    let headers: Record<string, unknown> = {};
    const res = {
      writeHead(s: number, h: Record<string, unknown>) {
        status = s;
        headers = h;
        return res;
      },
      end(body?: Buffer | string) {
        resolve({ status, headers, body: body === undefined ? '' : body.toString() });
      },
    } as unknown as ServerResponse;
    dash.routes.get('/')!({ method, headers: host === undefined ? {} : { host } } as IncomingMessage, res);
  });
}

test('GET / serves the page with a Content-Security-Policy that allows scripts from holdfast only', async () => {
  const r = await record('GET', '127.0.0.1:1080');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  assert.match(r.body, /<script src="\/assets\/dashboard\.js"><\/script>/);
  assert.match(String(r.headers['content-security-policy']), /script-src 'self';/);
  assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
  const head = await record('HEAD', 'localhost:1080');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal((await record('POST', 'localhost')).status, 405);
});

test('the dashboard answers only requests whose Host is an address, localhost or this machine (no DNS rebinding)', async () => {
  for (const h of [undefined, '127.0.0.1:1080', '[::1]:1080', 'localhost', 'LOCALHOST:1080', 'app.localhost:1080', '10.1.1.2', '[fe80::1%25eth0]:1080']) {
    assert.equal(hostIsOurs(h), true, `${h} is ours`);
  }
  for (const h of ['evil.example:1080', 'example.org', 'localhost.evil.example', '127.0.0.1.nip.io:1080']) {
    assert.equal(hostIsOurs(h), false, `${h} is not ours`);
  }
  const r = await record('GET', 'rebind.evil.example:1080');
  assert.equal(r.status, 403);
  assert.match(r.body, /rebind\.evil\.example/);
});

/** A response double for /events: records writes, can be closed like a leaving page. */
class FakeStream extends EventEmitter {
  status = 0;
  headers: Record<string, unknown> = {};
  chunks: string[] = [];
  destroyed = false;
  writableEnded = false;
  writableLength = 0;
  writeHead(s: number, h: Record<string, unknown>) {
    this.status = s;
    this.headers = h;
    return this;
  }
  write(chunk: string) {
    this.chunks.push(chunk);
    return true;
  }
  end() {
    this.writableEnded = true;
    this.emit('close');
  }
  /** SSE messages written so far: [event, data] */
  messages(): [string, Record<string, unknown>][] {
    return this.chunks
      .join('')
      .split('\n\n')
      .filter((m) => m.includes('data: '))
      .map((m) => [/event: (\w+)/.exec(m)![1], JSON.parse(/data: (.*)/.exec(m)![1]) as Record<string, unknown>]);
  }
}

test('/events: everything at connect, an update right after a route change, a tick per sample, nothing once the page leaves', async (t) => {
  const clock = new FakeClock();
  const if1 = iface('if1', { index: 2, addresses: ['10.0.1.2/24'], routes: [{ family: 4, metric: 100 }] });
  const if2 = iface('if2', { index: 3, addresses: ['10.0.2.2/24'] });
  const monitor = new FakeMonitor([loopback(), if1, if2]);
  const table = new FlowTable({ graceMs: 1000, log: logSink().log, clock });
  t.after(() => table.close());
  const stats = new Stats({ flows: table, monitor, binder: 'device', clock });
  t.after(() => stats.close());
  const dash = createDashboard(stats);
  t.after(() => dash.close());

  const res = new FakeStream();
  const req = { method: 'GET', headers: { host: '127.0.0.1:1080' }, socket: { setNoDelay() {} } };
  dash.routes.get('/events')!(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
  assert.equal(dash.clients, 1);
  let msgs = res.messages();
  assert.deepEqual(msgs.map(([e]) => e), ['init'], 'the page gets everything at once');
  assert.ok('history' in msgs[0][1] && 'status' in msgs[0][1]);

  monitor.set([loopback(), if1, withIface(if2, { defaultRoutes: [{ family: 4, gateway: '10.0.2.1', metric: 50 }] })]);
  await new Promise((r) => setImmediate(r));
  msgs = res.messages();
  assert.deepEqual(msgs.map(([e]) => e), ['init', 'update'], 'a route change is pushed at once, not at the next tick');
  const update = msgs[1][1] as { status: { best: { ipv4: string } }; events: { type: string }[] };
  assert.equal(update.status.best.ipv4, 'if2');
  assert.deepEqual(update.events.map((e) => e.type), ['net', 'route']);

  stats.sample();
  msgs = res.messages();
  assert.equal(msgs.at(-1)![0], 'tick');
  assert.deepEqual((msgs.at(-1)![1] as { events: unknown[] }).events, [], 'events are sent once');
  assert.ok('point' in msgs.at(-1)![1]);

  res.end(); // the page leaves
  assert.equal(dash.clients, 0);
  const n = res.chunks.length;
  stats.sample();
  monitor.set([loopback(), if1, if2]);
  await new Promise((r) => setImmediate(r));
  assert.equal(res.chunks.length, n, 'nothing is built or written for nobody');
});
