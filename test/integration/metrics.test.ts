// GET /metrics: Prometheus text (format 0.0.4) that a strict parser accepts, and counters that
// move as flows open and close: a real holdfast on loopback with real SOCKS5 and HTTP flows; then
// cuts, fallbacks, affinity and route changes through the real FlowTable and Stats on a fake
// network (those need interfaces a loopback-only test cannot have).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { test } from 'node:test';
import type { Destination, NetInterface } from '../../src/contracts.js';
import { FlowTable } from '../../src/flows.js';
import { createMetrics } from '../../src/observe/metrics.js';
import { describeChange, Stats } from '../../src/observe/stats.js';
import { diffSnapshots } from '../../src/net/monitor.js';
import { FakeClock, FakeMonitor, iface, logSink, loopback, snapshot, withIface } from '../helpers/fakes.js';
import { flowsDrained, startProxy, type TestProxy } from '../helpers/proxy.js';
import { closedPort, echoServer, httpServer } from '../helpers/servers.js';
import { readAll, readN, socksRequest } from '../helpers/socks-client.js';

// ---- a strict parser for the Prometheus text exposition format 0.0.4 --------------------------

type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}
interface Family {
  type: MetricType | undefined;
  help: string | undefined;
  readonly samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s: string, line: number): number {
  if (s === 'NaN') return NaN;
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) throw new Error(`line ${line}: bad value "${s}"`);
  return Number(s);
}

/** Parse `{a="x",b="y\"z"}` starting at text[i] === '{'; returns labels and the index after '}'. */
function parseLabels(text: string, i: number, line: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  i++; // '{'
  for (;;) {
    if (text[i] === '}') return [labels, i + 1];
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without '='`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`line ${line}: bad label name "${name}"`);
    if (name in labels) throw new Error(`line ${line}: label "${name}" twice`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`);
    let v = '';
    let k = eq + 2;
    for (;; k++) {
      const c = text[k];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const n = text[++k];
        if (n === 'n') v += '\n';
        else if (n === '\\' || n === '"') v += n;
        else throw new Error(`line ${line}: bad escape \\${n}`);
      } else if (c === '\n') throw new Error(`line ${line}: raw newline in label value`);
      else v += c;
    }
    labels[name] = v;
    i = k + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new Error(`line ${line}: expected ',' or '}' after a label`);
  }
}

const SUFFIXES: Record<MetricType, readonly string[]> = {
  counter: [''],
  gauge: [''],
  untyped: [''],
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
};

function parsePrometheus(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { type: undefined, help: undefined, samples: [] }));
    return f;
  };
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name "${name}"`);
      const f = family(name);
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new Error(`line ${line}: second HELP for ${name}`);
        f.help = rest;
      } else {
        if (f.type !== undefined) throw new Error(`line ${line}: second TYPE for ${name}`);
        if (f.samples.length) throw new Error(`line ${line}: TYPE for ${name} after its samples`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`line ${line}: bad type "${rest}"`);
        f.type = rest as MetricType;
      }
      return;
    }
    const nameEnd = raw.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`line ${line}: no metric name: ${raw}`);
    const name = raw.slice(0, nameEnd);
    if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name "${name}"`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (raw[i] === '{') [labels, i] = parseLabels(raw, i, line);
    if (raw[i] !== ' ') throw new Error(`line ${line}: expected a space before the value`);
    const parts = raw.slice(i + 1).split(' ');
    if (parts.length > 2 || (parts.length === 2 && !/^-?\d+$/.test(parts[1]))) throw new Error(`line ${line}: bad value/timestamp`);
    const value = parseValue(parts[0], line);
    // the family: declared by TYPE before, by name or name + a suffix of its type
    let fam: Family | undefined;
    for (const [fname, f] of families) {
      if (f.type && SUFFIXES[f.type].some((s) => fname + s === name)) fam = f;
    }
    if (!fam) throw new Error(`line ${line}: sample ${name} before (or without) its TYPE`);
    const key = `${name}{${Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
    if (seen.has(key)) throw new Error(`line ${line}: duplicate series ${key}`);
    seen.add(key);
    if (fam.type === 'counter' && !(value >= 0)) throw new Error(`line ${line}: counter ${name} is ${value}`);
    fam.samples.push({ name, labels, value });
  });
  return families;
}

class Scrape {
  constructor(readonly families: Map<string, Family>) {}
  /** The value of the series with exactly these labels, or 0 if absent (counters start at 0). */
  value(name: string, labels: Record<string, string> = {}): number {
    const want = Object.entries(labels);
    for (const f of this.families.values()) {
      for (const s of f.samples) {
        if (s.name !== name || Object.keys(s.labels).length !== want.length) continue;
        if (want.every(([k, v]) => s.labels[k] === v)) return s.value;
      }
    }
    return 0;
  }
  has(name: string, labels: Record<string, string>): boolean {
    return [...this.families.values()].some((f) =>
      f.samples.some((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)),
    );
  }
}

function get(p: TestProxy, path: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: p.host, port: p.port, path, headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

async function scrape(p: TestProxy): Promise<Scrape> {
  const r = await get(p, '/metrics');
  assert.equal(r.status, 200);
  return new Scrape(parsePrometheus(r.body));
}

// ---- the parser itself must reject what Prometheus rejects ----------------------------------

test('the strict parser rejects malformed expositions', () => {
  const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 3\n';
  assert.equal(parsePrometheus(ok).get('a_total')?.samples[0].value, 3);
  const bad = [
    'a_total 1\n', // no TYPE
    '# TYPE a_total counter\na_total 1', // no final newline
    '# TYPE a_total counter\na_total{x="1} 1\n', // unterminated label
    '# TYPE a_total counter\na_total{x="1"} one\n', // bad value
    '# TYPE a_total counter\na_total -1\n', // negative counter
    '# TYPE a_total counter\na_total{x="1"} 1\na_total{x="1"} 2\n', // duplicate series
    '# TYPE a_total counter\n# TYPE a_total counter\n', // second TYPE
    '# TYPE a_total flute\n', // bad type
    '# TYPE a_total counter\na_total{x="\\t"} 1\n', // bad escape
    '# TYPE 1a counter\n', // bad name
  ];
  for (const text of bad) assert.throws(() => parsePrometheus(text), Error, JSON.stringify(text));
});

// ---- a real holdfast --------------------------------------------------------------------------

const FAMILIES: Record<string, MetricType> = {
  holdfast_info: 'gauge',
  holdfast_start_time_seconds: 'gauge',
  holdfast_flows_open: 'gauge',
  holdfast_flows_total: 'counter',
  holdfast_flows_closed_total: 'counter',
  holdfast_bytes_total: 'counter',
  holdfast_cuts_total: 'counter',
  holdfast_fallbacks_total: 'counter',
  holdfast_affinity_placements_total: 'counter',
  holdfast_dial_errors_total: 'counter',
  holdfast_route_changes_total: 'counter',
  holdfast_net_changes_total: 'counter',
  holdfast_interface_up: 'gauge',
  holdfast_interface_best: 'gauge',
};

test('GET /metrics is Prometheus text: every family typed and described, every sample well-formed', async (t) => {
  const p = await startProxy(t);
  const r = await get(p, '/metrics');
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/plain; version=0\.0\.4; charset=utf-8$/);
  const fams = parsePrometheus(r.body);
  for (const [name, type] of Object.entries(FAMILIES)) {
    const f = fams.get(name);
    assert.ok(f, `family ${name} present`);
    assert.equal(f.type, type, `${name} is a ${type}`);
    assert.ok(f.help && f.help.length > 10, `${name} has a HELP text`);
    if (type === 'counter') assert.match(name, /_total$/, 'counters end in _total');
  }
  const s = new Scrape(fams);
  assert.equal(s.value('holdfast_info', { version: '0.1.0', binder: p.hf.binder }), 1);
  assert.equal(s.value('holdfast_interface_up', { interface: 'lo' }), 1);
  const started = s.value('holdfast_start_time_seconds');
  assert.ok(Math.abs(started - Date.now() / 1000) < 60, `start time ${started} is about now`);

  const post = await new Promise<number>((resolve, reject) => {
    const req = request({ host: p.host, port: p.port, path: '/metrics', method: 'POST' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(post, 405, 'POST /metrics is refused');
});

test('metrics counters move as flows open and close (SOCKS5 CONNECT, a refused dial, HTTP forward)', async (t) => {
  const p = await startProxy(t);
  const echo = await echoServer(t);
  const m0 = await scrape(p);
  const socks = { kind: 'socks5-connect' };
  const lo = { egress: 'lo' };

  // a live SOCKS5 flow, 50 000 bytes each way
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', echo.port);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0);
  const payload = randomBytes(50_000);
  socket.write(payload);
  assert.ok((await readN(socket, payload.length)).equals(payload));
  const m1 = await scrape(p);
  assert.equal(m1.value('holdfast_flows_open', { ...socks, ...lo }), 1, 'one live socks5-connect flow on lo');
  assert.equal(m1.value('holdfast_flows_total', socks) - m0.value('holdfast_flows_total', socks), 1);
  assert.equal(m1.value('holdfast_bytes_total', { ...lo, direction: 'up' }) - m0.value('holdfast_bytes_total', { ...lo, direction: 'up' }), 50_000);
  assert.equal(m1.value('holdfast_bytes_total', { ...lo, direction: 'down' }) - m0.value('holdfast_bytes_total', { ...lo, direction: 'down' }), 50_000);

  socket.end();
  await readAll(socket);
  await flowsDrained(p.hf);
  const m2 = await scrape(p);
  assert.equal(m2.value('holdfast_flows_open', { ...socks, ...lo }), 0, 'no live flow after it closed');
  assert.equal(m2.value('holdfast_flows_closed_total', { ...socks, reason: 'done' }), 1);
  assert.equal(
    m2.value('holdfast_bytes_total', { ...lo, direction: 'down' }),
    m1.value('holdfast_bytes_total', { ...lo, direction: 'down' }),
    'bytes stay counted after the flow ends',
  );

  // a dial that is refused
  const port = await closedPort();
  const refused = await socksRequest(p.port, 0x01, '127.0.0.1', port);
  t.after(() => refused.socket.destroy());
  assert.equal(refused.reply.rep, 0x05);
  refused.socket.destroy();
  await flowsDrained(p.hf);
  const m3 = await scrape(p);
  assert.equal(m3.value('holdfast_dial_errors_total', { code: 'HF_REFUSED' }) - m2.value('holdfast_dial_errors_total', { code: 'HF_REFUSED' }), 1);
  assert.equal(m3.value('holdfast_flows_closed_total', { ...socks, reason: 'dial failed' }), 1);
  assert.equal(m3.value('holdfast_flows_total', socks), m0.value('holdfast_flows_total', socks) + 2, 'a flow that never pinned still counts as begun');

  // one plain-HTTP request forwarded
  const srv = await httpServer(t, (_req, res) => res.end('hello'));
  const forwarded = await get(p, `http://127.0.0.1:${srv.port}/x`);
  assert.equal(forwarded.body, 'hello');
  await flowsDrained(p.hf);
  const m4 = await scrape(p);
  const http = { kind: 'http-forward' };
  assert.equal(m4.value('holdfast_flows_total', http) - m3.value('holdfast_flows_total', http), 1);
  assert.equal(m4.value('holdfast_flows_closed_total', { ...http, reason: 'done' }), 1);
  assert.ok(m4.value('holdfast_bytes_total', { ...lo, direction: 'down' }) > m3.value('holdfast_bytes_total', { ...lo, direction: 'down' }));
  // /status is a view of the same numbers
  const st = p.hf.status();
  const loStatus = st.interfaces.find((i) => i.name === 'lo');
  assert.equal(loStatus?.bytesDownTotal, m4.value('holdfast_bytes_total', { ...lo, direction: 'down' }));
});

// ---- cuts, fallbacks, affinity, route changes: the real FlowTable and Stats on a fake network --

test('cuts, fallbacks, affinity placements and route changes are counted and reach the event feed', async (t) => {
  const clock = new FakeClock();
  const sink = logSink();
  const if1 = iface('if1', { index: 2, addresses: ['10.0.1.2/24'], routes: [{ family: 4, metric: 100, gateway: '10.0.1.1' }] });
  const if2 = iface('if2', { index: 3, addresses: ['10.0.2.2/24'] });
  const monitor = new FakeMonitor([loopback(), if1, if2]);
  const table = new FlowTable({ graceMs: 10_000, log: sink.log, clock });
  t.after(() => table.close());
  table.watch(monitor);
  const stats = new Stats({ flows: table, monitor, binder: 'device', clock });
  t.after(() => stats.close());
  const metrics = createMetrics(stats, 'device');

  const dst: Destination = { host: 'example.org', port: 443, isName: true };
  const pin = (ifname: string, source: string, placedBy: 'route' | 'affinity' | 'fallback') => {
    const f = table.open('socks5-connect', '127.0.0.1:40000', dst);
    f.pinned({ egress: { ifname, source, family: 4, placedBy }, target: { ip: '93.184.216.34', family: 4, port: 443 }, localAddress: source, attempts: '' });
    return f;
  };
  const a = pin('if1', '10.0.1.2', 'route');
  pin('if1', '10.0.1.2', 'affinity');
  const c = pin('if2', '10.0.2.2', 'fallback');
  a.bytesDown += 4000;
  c.bytesUp += 70;

  // a better route via if2 appears (route change), then if1 loses carrier: its two flows are cut after the grace
  monitor.set([loopback(), if1, withIface(if2, { defaultRoutes: [{ family: 4, gateway: '10.0.2.1', metric: 50 }] })]);
  monitor.set([
    loopback(),
    withIface(if1, { carrier: false }),
    withIface(if2, { defaultRoutes: [{ family: 4, gateway: '10.0.2.1', metric: 50 }] }),
  ] as NetInterface[]);
  clock.advance(10_000);

  const s = new Scrape(parsePrometheus(await metrics.registry.metrics()));
  assert.equal(s.value('holdfast_cuts_total', { egress: 'if1', reason: 'no carrier' }), 2);
  assert.equal(s.value('holdfast_fallbacks_total', { egress: 'if2' }), 1);
  assert.equal(s.value('holdfast_affinity_placements_total', { egress: 'if1' }), 1);
  assert.equal(s.value('holdfast_route_changes_total'), 1, 'one change of default routes (carrier loss is not one)');
  assert.equal(s.value('holdfast_net_changes_total'), 2);
  assert.equal(s.value('holdfast_flows_total', { kind: 'socks5-connect' }), 3);
  assert.equal(s.value('holdfast_flows_closed_total', { kind: 'socks5-connect', reason: 'cut' }), 2);
  assert.equal(s.value('holdfast_flows_open', { kind: 'socks5-connect', egress: 'if2' }), 1);
  assert.equal(s.value('holdfast_bytes_total', { egress: 'if1', direction: 'down' }), 4000, 'bytes of cut flows stay counted');
  assert.equal(s.value('holdfast_bytes_total', { egress: 'if2', direction: 'up' }), 70);
  assert.equal(s.value('holdfast_interface_best', { interface: 'if2', family: 'ipv4' }), 1);
  assert.equal(s.value('holdfast_interface_best', { interface: 'if1', family: 'ipv4' }), 0);
  assert.equal(s.value('holdfast_interface_up', { interface: 'if1' }), 0);
  assert.ok(!s.has('holdfast_flows_open', { egress: 'if1' }), 'no live flow on if1 any more');

  const feed = stats.events();
  const texts = feed.map((e) => `${e.type}: ${e.text}`);
  assert.deepEqual(
    feed.map((e) => e.type),
    ['start', 'fallback', 'net', 'route', 'net', 'cut'],
    texts.join('\n'),
  );
  assert.equal(texts[2], 'net: if2 default route via 10.0.2.1 (metric 50) added');
  assert.equal(texts[3], 'route: new IPv4 flows now go via if2, was if1; live flows stay where they are');
  assert.equal(texts[4], 'net: if1 lost carrier');
  assert.equal(texts[5], 'cut: if1: 2 flows cut after 10 s (no carrier)');
  assert.deepEqual(stats.events(feed[3].seq).map((e) => e.type), ['net', 'cut'], 'events after a seq');

  // one sample: per-interface rates and history for the interfaces the host has
  c.bytesDown += 1_000_000;
  const point = stats.sample();
  assert.ok(point.ifs.if2.down > 0, 'if2 carried bytes in this sample');
  const h = stats.history();
  assert.equal(h.t.length, 1);
  assert.deepEqual(h.series.map((x) => x.name), ['if1', 'if2'], 'non-loopback interfaces, by index');
});

test('a network change reads as one line per interface, and one route line when IPv4 and IPv6 move together', () => {
  const if1 = iface('if1', {
    index: 2,
    addresses: ['10.1.1.2/24', 'fd01:1::2/64'],
    routes: [
      { family: 4, metric: 100, gateway: '10.1.1.1' },
      { family: 6, metric: 100, gateway: 'fd01:1::1' },
    ],
  });
  const down = iface('if2', { index: 3, up: false, carrier: false });
  const up = iface('if2', {
    index: 3,
    addresses: ['10.1.2.2/24', 'fd01:2::2/64', 'fe80::1/64'],
    routes: [
      { family: 4, metric: 50, gateway: '10.1.2.1' },
      { family: 6, metric: 50, gateway: 'fd01:2::1' },
    ],
  });
  const prev = snapshot([loopback(), if1, down], 1);
  const next = snapshot([loopback(), if1, up], 2);
  assert.deepEqual(describeChange(prev, next, diffSnapshots(prev, next)), [
    {
      type: 'net',
      text: 'if2 came up; gained 10.1.2.2/24, fd01:2::2/64; default routes via 10.1.2.1, fd01:2::1 (metric 50) added',
      interface: 'if2',
    },
    { type: 'route', text: 'new flows now go via if2, was if1; live flows stay where they are', interface: 'if2' },
  ]);
  // and back: if2 goes down, its routes with it
  assert.deepEqual(
    describeChange(next, prev, diffSnapshots(next, prev)).map((l) => l.text),
    [
      'if2 went down; lost 10.1.2.2/24, fd01:2::2/64; default routes via 10.1.2.1, fd01:2::1 (metric 50) removed',
      'new flows now go via if1, was if2; live flows stay where they are',
    ],
  );
});
