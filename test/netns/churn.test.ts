// Route churn integrity (issue 7), in the two-link lab: many checksummed downloads through
// holdfast (SOCKS5, HTTP CONNECT and plain HTTP; IPv4 and IPv6) while the harness flips which
// default route is better and drops and restores links (carrier and administrative) at random
// for a bounded time. Every transfer must either complete with the right checksum or end with
// an error its client saw; none corrupted, none hanging past grace + timeouts; no flow left in
// holdfast's table at the end.
//
// Route "flips" keep a default route on both interfaces (if2's metric moves between better and
// worse than if1's): a pinned flow needs a route through its device (KERNEL-NOTES), and losing
// every route of an interface that keeps its carrier is a different fault (see the report).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADDR, IF1_METRIC, NETWORK_OF_PEER } from '../helpers/lab.js';
import { createLab, Download, holdfastLabOptions, startLabHoldfast, withDiagnostics } from '../helpers/lab-extras.js';
import { downloadPath, expectedSha256, PacedServer, pacedServerScript } from '../helpers/paced-server.js';
import { delay, pollUntil } from '../helpers/proc.js';

const PORT = 8080;
const CHURN_MS = Number(process.env.HOLDFAST_CHURN_MS ?? 40_000);
const WORKERS = 8;
const GRACE_MS = 1500;
const DIAL_TIMEOUT_MS = 3000;
const MAX_OUTAGE_MS = 4000;
const MAX_TIME_S = 45;
const IF2_BETTER = 50;
const IF2_WORSE = 150;

/** A small seeded PRNG, so a failing run can be replayed with HOLDFAST_CHURN_SEED. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

type Kind = 'socks5' | 'connect' | 'forward';

interface Transfer {
  tag: string;
  kind: Kind;
  family: 4 | 6;
  bytes: number;
  rate: number;
  startedAt: number;
  endedAt: number;
  code: number | null;
  received: number;
  shaOk: boolean;
  stderr: string;
}

test('route churn: every transfer completes intact or fails visibly; none hangs; no flow leaks', holdfastLabOptions(CHURN_MS + 150_000), async (t) => {
  const seed = Number(process.env.HOLDFAST_CHURN_SEED ?? Date.now() % 1_000_000);
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const between = (a: number, b: number) => Math.round(a + rnd() * (b - a));
  t.diagnostic(`seed ${seed} (replay with HOLDFAST_CHURN_SEED=${seed}), churn ${CHURN_MS} ms, ${WORKERS} clients`);

  const lab = await createLab(t, { ipv6: true, if2AtStart: true });
  const gw = { if1: ADDR.r1.host, if2: ADDR.r2.host };
  const state = { if2Metric: IF2_WORSE, impaired: null as null | string };
  await lab.ipBatch('host', [
    `route add default via ${gw.if2.v4} dev if2 metric ${state.if2Metric}`,
    `route add ::/0 via ${gw.if2.v6} dev if2 metric ${state.if2Metric}`,
  ]);
  const serverChild = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => serverChild.kill());
  await new PacedServer(serverChild, PORT).ready();
  const hf = await startLabHoldfast(t, lab, { grace: GRACE_MS, dial: { timeout: DIAL_TIMEOUT_MS }, fallback: { delay: 300 } });

  const t0 = Date.now();
  const events: string[] = [];
  const event = (what: string, at = Date.now()) => events.push(`+${String(at - t0).padStart(6)} ms  ${what}`);

  const defaultLines = (ifname: 'if1' | 'if2', metric: number, verb: 'add' | 'replace' | 'del') => [
    `route ${verb} default via ${gw[ifname].v4} dev ${ifname} metric ${metric}`,
    `route ${verb} ::/0 via ${gw[ifname].v6} dev ${ifname} metric ${metric}`,
  ];

  // ---- the churn -------------------------------------------------------------------------------
  // Every change to links and routes goes through one queue: a flip that ran while an outage's
  // restore was on its way would read a metric the restore had not put back yet (and the next
  // flip's `route add` would then meet a route that is already there).
  let routeOps: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = routeOps.then(fn, fn);
    routeOps = next.catch(() => {});
    return next;
  };
  const flip = () =>
    serial(async () => {
      const next = state.if2Metric === IF2_WORSE ? IF2_BETTER : IF2_WORSE;
      // while if2 is administratively down it has no routes: its metric is put back with it
      // the new route first, then the old one goes: there is always a route via if2
      if (state.impaired !== 'admin if2') await lab.ipBatch('host', [...defaultLines('if2', next, 'add'), ...defaultLines('if2', state.if2Metric, 'del')]);
      state.if2Metric = next;
      event(`route flip: if2 default metric ${next} (${next < IF1_METRIC ? 'if2' : 'if1'} is better)`);
    });
  const impair = async (what: string, ms: number) => {
    const [how, ifname] = what.split(' ') as ['carrier' | 'admin', 'if1' | 'if2'];
    await serial(async () => {
      state.impaired = what;
      event(`${what} down for ${ms} ms${ms > GRACE_MS ? ' (longer than grace: its flows are cut)' : ''}`);
      if (how === 'carrier') await lab.carrierDown(ifname);
      else await lab.ipBatch('host', [`link set ${ifname} down`]);
    });
    await delay(ms);
    await serial(async () => {
      if (how === 'carrier') await lab.carrierUp(ifname);
      else await lab.ipBatch('host', [`link set ${ifname} up`, ...defaultLines(ifname, ifname === 'if1' ? IF1_METRIC : state.if2Metric, 'replace')]);
      event(`${what} restored`);
      state.impaired = null;
    });
  };
  const churnEnd = t0 + CHURN_MS;
  const churn = (async () => {
    let outage: Promise<void> | undefined;
    while (Date.now() < churnEnd) {
      await delay(between(300, 1500));
      if (Date.now() >= churnEnd) break;
      if (outage === undefined && rnd() < 0.55) {
        const what = pick(['carrier if1', 'carrier if2', 'admin if1', 'admin if2']);
        const ms = Math.min(between(300, MAX_OUTAGE_MS), Math.max(300, churnEnd - Date.now()));
        outage = impair(what, ms).finally(() => (outage = undefined));
      } else {
        await flip();
      }
    }
    await outage;
  })();

  // ---- the transfers ---------------------------------------------------------------------------
  const transfers: Transfer[] = [];
  let n = 0;
  const worker = async (w: number) => {
    while (Date.now() < churnEnd) {
      const i = n++;
      const kind = pick<Kind>(['socks5', 'connect', 'forward']);
      const family = pick<4 | 6>([4, 6]);
      const ip = family === 4 ? pick(ADDR.server.service.v4) : pick(ADDR.server.service.v6);
      const host = family === 4 ? ip : `[${ip}]`;
      const bytes = between(64 * 1024, 4 * 1024 * 1024);
      const rate = between(1, 3) * 1024 * 1024;
      const tag = `c${i}-w${w}-${kind}-v${family}`;
      const args =
        kind === 'socks5'
          ? ['--socks5-hostname', hf.proxy]
          : kind === 'connect'
            ? ['-p', '-x', `http://${hf.proxy}`]
            : ['-x', `http://${hf.proxy}`];
      const dl = new Download(t, lab, tag, `http://${host}:${PORT}${downloadPath({ bytes, rate, seed: 1000 + i, tag })}`, [
        '--max-time',
        String(MAX_TIME_S),
        '-f',
        ...args,
      ]);
      const r = await dl.result;
      transfers.push({
        tag,
        kind,
        family,
        bytes,
        rate,
        startedAt: dl.startedAt,
        endedAt: r.endedAt,
        code: r.code,
        received: r.bytes,
        shaOk: r.bytes === bytes && r.sha256 === expectedSha256(1000 + i, bytes),
        stderr: r.stderr.trim(),
      });
      // like a real client, do not hammer the proxy after a failure
      if (r.code !== 0) await delay(between(100, 400));
    }
  };

  await withDiagnostics(t, lab, hf, async () => {
    await Promise.all([churn, ...Array.from({ length: WORKERS }, (_, w) => worker(w))]);
    event('churn over, every transfer ended');
    // everything restored (the churn put back what it took): the proxy still serves
    const after = new Download(t, lab, 'after', `http://${ADDR.server.service.v4[0]}:${PORT}${downloadPath({ bytes: 100_000, rate: 10_000_000, seed: 7, tag: 'after' })}`, [
      '--max-time',
      '20',
      '--socks5-hostname',
      hf.proxy,
    ]);
    const ar = await after.result;
    assert.equal(ar.code, 0, `a transfer after the churn: ${ar.stderr}`);
    assert.equal(ar.sha256, expectedSha256(7, 100_000));

    // no leaked flow: the table empties (flows close as their sockets do)
    const st = await pollUntil(async () => {
      const s = await hf.status();
      return s.flows.length === 0 ? s : undefined;
    }, { timeoutMs: GRACE_MS + 10_000, intervalMs: 200, what: '/status with no flows' });

    // ---- the report ------------------------------------------------------------------------------
    const cuts = hf.logs().filter((l) => l.msg === 'egress cut');
    for (const c of cuts) event(`holdfast: egress cut ${String(c.egress)}: ${String(c.flows)} flow(s) (${String(c.why)}, down ${String(c.downForMs)} ms)`, Number(c.time));
    for (const x of transfers.filter((y) => y.code !== 0)) {
      event(`  client saw: ${x.tag} (+${x.startedAt - t0} ms) exit ${x.code} after ${x.received}/${x.bytes} B: ${x.stderr.replace(/^curl: /, '')}`, x.endedAt);
    }
    events.sort((a, b) => Number(a.split('ms')[0].replace('+', '')) - Number(b.split('ms')[0].replace('+', '')));
    t.diagnostic(`events (${events.length}):`);
    for (const e of events) t.diagnostic(`  ${e}`);
    const byKind = new Map<string, { done: number; failed: number; codes: Map<string, number> }>();
    for (const x of transfers) {
      const k = `${x.kind} IPv${x.family}`;
      const e = byKind.get(k) ?? { done: 0, failed: 0, codes: new Map() };
      if (x.code === 0) e.done++;
      else {
        e.failed++;
        e.codes.set(String(x.code), (e.codes.get(String(x.code)) ?? 0) + 1);
      }
      byKind.set(k, e);
    }
    const done = transfers.filter((x) => x.code === 0).length;
    t.diagnostic(
      `transfers: ${transfers.length} (${done} complete and intact, ${transfers.length - done} ended with an error their client saw), ` +
        `${(transfers.reduce((s, x) => s + x.received, 0) / 1048576).toFixed(1)} MiB received; holdfast totals ${JSON.stringify(st.totals)}`,
    );
    for (const [k, e] of [...byKind].sort()) {
      t.diagnostic(`  ${k}: ${e.done} complete, ${e.failed} failed${e.codes.size ? ` (curl exit ${[...e.codes].map(([c, m]) => `${c} x${m}`).join(', ')})` : ''}`);
    }

    const closeCodes = new Map<string, number>();
    for (const l of hf.logs().filter((x) => x.msg === 'flow close')) {
      const k = `${String(l.reason)}${l.code ? ` ${String(l.code)}` : ''}`;
      closeCodes.set(k, (closeCodes.get(k) ?? 0) + 1);
    }
    t.diagnostic(`holdfast flow close reasons: ${[...closeCodes].map(([k, m]) => `${k} x${m}`).join(', ')}`);

    // ---- the verdicts ------------------------------------------------------------------------------
    const corrupted = transfers.filter((x) => x.code === 0 && !x.shaOk);
    assert.deepEqual(corrupted.map((x) => `${x.tag}: ${x.received}/${x.bytes} B`), [], 'no transfer reported success with wrong bytes');
    const hung = transfers.filter((x) => {
      const bound = (x.bytes / x.rate) * 1000 + GRACE_MS + DIAL_TIMEOUT_MS + MAX_OUTAGE_MS + 10_000;
      return x.code === 28 || x.code === null || x.endedAt - x.startedAt > bound;
    });
    assert.deepEqual(
      hung.map((x) => `${x.tag}: exit ${x.code} after ${x.endedAt - x.startedAt} ms (${x.received}/${x.bytes} B): ${x.stderr}`),
      [],
      'no transfer hung past grace + timeouts',
    );
    assert.ok(transfers.length >= WORKERS * 5, `enough transfers ran (${transfers.length})`);
    assert.ok(done >= transfers.length / 2, `most transfers completed (${done}/${transfers.length})`);
    assert.ok(events.length >= 10, 'the churn happened');
    assert.equal(hf.child.running, true, 'holdfast is still running');
  });
});

test('7: while the better default\'s interface has no carrier, new flows take the other one (no HF_NET_UNREACHABLE)', holdfastLabOptions(60_000), async (t) => {
  const lab = await createLab(t, { ipv6: true, if2AtStart: true });
  await lab.ipBatch('host', [
    `route add default via ${ADDR.r2.host.v4} dev if2 metric ${IF2_BETTER}`,
    `route add ::/0 via ${ADDR.r2.host.v6} dev if2 metric ${IF2_BETTER}`,
  ]);
  const serverChild = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => serverChild.kill());
  const server = await new PacedServer(serverChild, PORT).ready();
  const hf = await startLabHoldfast(t, lab, { grace: GRACE_MS });
  await withDiagnostics(t, lab, hf, async () => {
    await lab.carrierDown('if2');
    // holdfast sees the carrier loss (its monitor), then new flows must go through if1
    await pollUntil(async () => ((await hf.status()).interfaces.find((i) => i.name === 'if2')?.carrier === false ? true : undefined), {
      timeoutMs: 5000,
      what: 'if2 without carrier in /status',
    });
    const kinds = [
      ['socks5', ['--socks5-hostname', hf.proxy]],
      ['connect', ['-p', '-x', `http://${hf.proxy}`]],
      ['forward', ['-x', `http://${hf.proxy}`]],
    ] as const;
    for (const [kind, args] of kinds) {
      for (const host of [ADDR.server.service.v4[0], `[${ADDR.server.service.v6[0]}]`]) {
        const tag = `no-carrier-${kind}-${host.length}`;
        const dl = new Download(t, lab, tag, `http://${host}:${PORT}${downloadPath({ bytes: 50_000, rate: 10_000_000, seed: 3, tag })}`, ['--max-time', '10', '-f', ...args]);
        const r = await dl.result;
        assert.equal(r.code, 0, `${tag}: ${r.stderr}`);
        assert.equal(r.sha256, expectedSha256(3, 50_000));
        const rec = await server.waitFor(tag, 'request', 5000);
        assert.equal(NETWORK_OF_PEER[rec.peer], 'net1', `${tag} went through net1 (peer ${rec.peer})`);
      }
    }
    const unreachable = hf.logs().filter((l) => l.msg === 'flow close' && l.code === 'HF_NET_UNREACHABLE');
    assert.equal(unreachable.length, 0);
  });
});
