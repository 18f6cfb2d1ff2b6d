// The handover, in the KERNEL-NOTES two-link lab (root; see test/helpers/lab.ts): downloads begun
// on if1 must finish on if1 after a better default route via if2 appears, while new flows take if2.
// The control shows the lab reproduces the problem: without holdfast the same download stalls.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ADDR, Lab, labTestOptions, NETWORK_OF_PEER } from '../helpers/lab.js';
import { Download } from '../helpers/lab-extras.js';
import { downloadPath, expectedSha256, PacedServer, pacedServerScript, type RequestRecord } from '../helpers/paced-server.js';
import { type Child, delay, pollUntil } from '../helpers/proc.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const PORT = 8080;
const PROXY_PORT = 1080;
const BYTES = 10 * 1024 * 1024;
const RATE = 1024 * 1024;
const CHANGE_AT_MS = 3000;

function holdfastTestOptions(): { skip?: string; timeout?: number } {
  const base = labTestOptions({ timeout: 60_000 });
  if (base.skip || existsSync(CLI)) return base;
  const reason = `${CLI} not built (run npx tsc -p tsconfig.json)`;
  console.log(`# holdfast handover ${process.env.CI === 'true' ? 'will fail (CI)' : 'skipped'}: ${reason}`);
  return process.env.CI === 'true' ? base : { ...base, skip: reason };
}

type Family = 'IPv4' | 'IPv6';

function service(family: Family, which: 0 | 1): { ip: string; host: string } {
  const ip = family === 'IPv4' ? ADDR.server.service.v4[which] : ADDR.server.service.v6[which];
  return { ip, host: family === 'IPv4' ? ip : `[${ip}]` };
}

// ---- downloads: curl in the host namespace, its output hashed here --------------------------------

// ---- holdfast in the host namespace ---------------------------------------------------------------

interface StatusInterface {
  name: string;
  up?: boolean;
  addresses?: string[];
  defaultRoute?: { gateway: string | null; metric: number } | null;
  defaultRoutes?: Array<{ gateway: string | null; metric: number }>;
}
interface StatusFlow {
  id: number;
  kind: string;
  client: string;
  dst: string;
  egress: string | null;
  src: string | null;
  placedBy: unknown;
  startedAt: number;
  bytesUp: number;
  bytesDown: number;
}
interface Status {
  interfaces: StatusInterface[];
  flows: StatusFlow[];
}

async function startHoldfast(t: TestContext, lab: Lab): Promise<{ child: Child; status: () => Promise<Status> }> {
  const child = lab.spawn('host', [
    process.execPath,
    CLI,
    'start',
    '--listen',
    `127.0.0.1:${PROXY_PORT}`,
    '--listen',
    `[::1]:${PROXY_PORT}`,
    '--log-level',
    'info',
  ]);
  t.after(() => child.kill());
  const listening = (addr: string) => (l: string) => {
    try {
      const o = JSON.parse(l) as { msg?: string; listen?: unknown };
      return o.msg === 'listening' && JSON.stringify(o.listen ?? '').includes(addr);
    } catch {
      return false;
    }
  };
  await Promise.all([
    child.waitForLine(listening('127.0.0.1'), 10_000, 'holdfast "listening" on 127.0.0.1'),
    child.waitForLine(listening('::1'), 10_000, 'holdfast "listening" on [::1]'),
  ]);
  const status = async (): Promise<Status> => {
    const r = await lab.exec('host', 'curl', ['-sS', '--max-time', '3', `http://127.0.0.1:${PROXY_PORT}/status`], { timeoutMs: 5000 });
    return JSON.parse(r.stdout) as Status;
  };
  return { child, status };
}

function hasDefaultRoute(i: StatusInterface | undefined): boolean {
  if (!i) return false;
  return !!i.defaultRoute || (Array.isArray(i.defaultRoutes) && i.defaultRoutes.length > 0);
}

function flowsTo(st: Status, ip: string): StatusFlow[] {
  return st.flows.filter((f) => f.dst.includes(ip));
}

function brief(f: StatusFlow): string {
  return `id=${f.id} ${f.kind} ${f.dst} on ${f.egress} from ${f.src} (${f.bytesDown} B down)`;
}

function logTail(child: Child, n = 30): string {
  return [...child.lines.slice(-n), ...child.stderrLines.slice(-10)].join('\n');
}

/** The server's live records (bytes sent so far), asked inside the server namespace. */
async function seen(lab: Lab): Promise<Map<string, RequestRecord>> {
  const r = await lab.exec('server', 'curl', ['-sS', '--max-time', '3', `http://127.0.0.1:${PORT}/seen`], { timeoutMs: 5000 });
  return new Map((JSON.parse(r.stdout) as RequestRecord[]).map((x) => [x.tag ?? '', x]));
}

function diagLines(t: TestContext, title: string, text: string): void {
  t.diagnostic(title);
  for (const l of text.split('\n')) t.diagnostic(`  ${l}`);
}

async function createLab(t: TestContext): Promise<Lab> {
  const lab = await Lab.create({ ipv6: true });
  t.after(() => lab.destroy());
  return lab;
}

async function startServer(t: TestContext, lab: Lab): Promise<PacedServer> {
  const child = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => child.kill());
  return new PacedServer(child, PORT).ready();
}

/** Sleep until `ms` after `since`: the route change is a scheduled action, not an awaited event. */
async function untilMs(since: number, ms: number): Promise<void> {
  await delay(Math.max(0, since + ms - Date.now()));
}

test('control: without holdfast, a download begun on if1 stalls after a better default via if2 (IPv4 and IPv6)', labTestOptions({ timeout: 60_000 }), async (t) => {
  const lab = await createLab(t);
  const server = await startServer(t, lab);
  // 6 s after the change is far past any in-flight data; --max-time ends the stalled transfer.
  const curlArgs = ['--max-time', String((CHANGE_AT_MS + 6000) / 1000)];
  const dls = (['IPv4', 'IPv6'] as const).map((fam) => {
    const tag = `control-${fam}`;
    const url = `http://${service(fam, 0).host}:${PORT}${downloadPath({ bytes: BYTES, rate: RATE, seed: fam === 'IPv4' ? 1 : 2, tag })}`;
    return { fam, tag, dl: new Download(t, lab, tag, url, curlArgs) };
  });
  const t0 = Math.min(...dls.map((d) => d.dl.startedAt));
  const began = await Promise.all(dls.map((d) => server.waitFor(d.tag, 'request', 5000)));
  for (const b of began) assert.equal(NETWORK_OF_PEER[b.peer], 'net1', `${b.tag} began through net1 (peer ${b.peer})`);

  await untilMs(t0, CHANGE_AT_MS);
  const changedAt = await lab.addBetterRouteViaIf2();
  const results = await Promise.all(dls.map((d) => d.dl.result));
  const records = await seen(lab);

  // A new unbound flow after the change goes through net2: the lab routes new flows to if2.
  const who: Record<string, string> = {};
  for (const fam of ['IPv4', 'IPv6'] as const) {
    const r = await lab.exec('host', 'curl', ['-sS', '-g', '--max-time', '5', `http://${service(fam, 0).host}:${PORT}/whoami`]);
    who[fam] = (JSON.parse(r.stdout) as { peer: string }).peer;
  }
  const counters = await lab.counters();

  dls.forEach((d, i) => {
    const r = results[i];
    const rec = records.get(d.tag);
    t.diagnostic(
      `control ${d.fam}: route changed at +${changedAt - t0} ms with ${d.dl.bytesAt(changedAt)} B received; ` +
        `last byte at +${(d.dl.lastByteAt() ?? t0) - t0} ms (${d.dl.bytesAt(changedAt + 1000)} B at change+1 s); ` +
        `curl exit ${r.code} at +${r.endedAt - t0} ms with ${r.bytes}/${BYTES} B; ` +
        `server saw ${rec?.peer} (${NETWORK_OF_PEER[rec?.peer ?? '']}), had sent ${rec?.bytesSent} B, done=${rec?.done}`,
    );
  });
  t.diagnostic(`control: new unbound flows after the change came from ${who.IPv4} / ${who.IPv6}`);
  t.diagnostic(`control: router counters ${JSON.stringify(counters)}`);

  dls.forEach((d, i) => {
    const r = results[i];
    assert.equal(r.code, 28, `${d.tag}: curl timed out (exit 28), got ${r.code}: ${r.stderr}`);
    assert.ok(r.bytes < BYTES, `${d.tag}: the download did not complete (${r.bytes} B)`);
    assert.equal(r.bytes, d.dl.bytesAt(changedAt + 1000), `${d.tag}: not one byte arrived from 1 s after the change to the end`);
    assert.equal(records.get(d.tag)?.done, false, `${d.tag}: the server never finished sending`);
  });
  assert.equal(NETWORK_OF_PEER[who.IPv4], 'net2', `new IPv4 flow after the change came through net2 (peer ${who.IPv4})`);
  assert.equal(NETWORK_OF_PEER[who.IPv6], 'net2', `new IPv6 flow after the change came through net2 (peer ${who.IPv6})`);
  assert.ok((counters['r2.bcp38-v4'] ?? 0) > 0 && (counters['r2.bcp38-v6'] ?? 0) > 0, "router2 dropped the stalled flows' ACKs (BCP 38)");
});

async function handover(t: TestContext, fam: Family): Promise<void> {
  assert.ok(existsSync(CLI), `${CLI} not built (run npx tsc -p tsconfig.json)`);
  const lab = await createLab(t);
  const server = await startServer(t, lab);
  const hf = await startHoldfast(t, lab);
  try {
    await handoverSteps(t, lab, server, hf.status, fam);
  } catch (err) {
    diagLines(t, 'holdfast log tail:', logTail(hf.child));
    diagLines(t, 'host routes:', await lab.hostRoutes());
    throw err;
  }
}

async function handoverSteps(t: TestContext, lab: Lab, server: PacedServer, status: () => Promise<Status>, fam: Family): Promise<void> {
  const proxy = fam === 'IPv4' ? `127.0.0.1:${PROXY_PORT}` : `[::1]:${PROXY_PORT}`;
  const old = service(fam, 0);
  const fresh = service(fam, 1);

  const st0 = await status();
  const if1 = st0.interfaces.find((i) => i.name === 'if1');
  assert.ok(if1 && hasDefaultRoute(if1), `holdfast sees if1 with its default route: ${JSON.stringify(st0.interfaces)}`);

  const kinds = [
    { kind: 'socks5-connect', args: ['--socks5-hostname', proxy] },
    { kind: 'http-forward', args: ['-x', `http://${proxy}`] },
    { kind: 'http-connect', args: ['-p', '-x', `http://${proxy}`] },
  ] as const;
  const dls = kinds.map((k, i) => {
    const tag = `${fam}-${k.kind}`;
    const url = `http://${old.host}:${PORT}${downloadPath({ bytes: BYTES, rate: RATE, seed: 10 + i, tag })}`;
    return { ...k, tag, seed: 10 + i, dl: new Download(t, lab, tag, url, ['--max-time', '30', ...k.args]) };
  });
  const t0 = Math.min(...dls.map((d) => d.dl.startedAt));
  const began = await Promise.all(dls.map((d) => server.waitFor(d.tag, 'request', 10_000)));
  for (const b of began) assert.equal(NETWORK_OF_PEER[b.peer], 'net1', `${b.tag} began through net1 (peer ${b.peer})`);

  const st1 = await status();
  const before = flowsTo(st1, old.ip);
  t.diagnostic(`${fam} /status before the change (+${Date.now() - t0} ms): ${before.map(brief).join('; ')}`);
  for (const d of dls) {
    const f = before.find((x) => x.kind === d.kind);
    assert.ok(f, `/status lists the ${d.kind} flow to ${old.ip}: ${JSON.stringify(st1.flows)}`);
    assert.equal(f.egress, 'if1', `${d.kind} flow placed on if1`);
  }

  await untilMs(t0, CHANGE_AT_MS);
  const changedAt = await lab.addBetterRouteViaIf2();
  const atChange = dls.map((d) => d.dl.bytesAt(changedAt));

  // Holdfast's view of the change (its monitor hears netlink at once, debounced): within 5 s,
  // a generous bound on what the monitor promises (issue 12: this used to be reported only)
  await pollUntil(async () => (hasDefaultRoute((await status()).interfaces.find((i) => i.name === 'if2')) ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 100,
    what: 'if2 with a default route in /status within 5 s of the change',
  });
  const seenAfter: number = Date.now() - changedAt;

  // New flows after the change, to a destination without live flows (no affinity): if2 / net2.
  const news = [
    { kind: 'socks5-connect', args: ['--socks5-hostname', proxy] },
    { kind: 'http-forward', args: ['-x', `http://${proxy}`] },
  ].map((k, i) => {
    const tag = `${fam}-new-${k.kind}`;
    const bytes = 2 * 1024 * 1024;
    const url = `http://${fresh.host}:${PORT}${downloadPath({ bytes, rate: RATE, seed: 20 + i, tag })}`;
    return { ...k, tag, seed: 20 + i, bytes, dl: new Download(t, lab, tag, url, ['--max-time', '20', ...k.args]) };
  });
  const newBegan = await Promise.all(news.map((d) => server.waitFor(d.tag, 'request', 10_000)));
  const st2 = await status();
  const afterOld = flowsTo(st2, old.ip);
  const afterNew = flowsTo(st2, fresh.ip);
  t.diagnostic(`${fam} /status after the change (+${Date.now() - t0} ms): ${[...afterOld, ...afterNew].map(brief).join('; ')}`);

  // A short request to the old destination while its flows live: affinity says if1 (asserted below).
  const aff = await lab.exec('host', 'curl', ['-sS', '-g', '--max-time', '5', '--socks5-hostname', proxy, `http://${old.host}:${PORT}/whoami`], {
    allowFail: true,
  });
  let affinityPeer = `failed: ${aff.stderr.trim()}`;
  try {
    affinityPeer = (JSON.parse(aff.stdout) as { peer: string }).peer;
  } catch {
    /* reported as failed */
  }

  const results = await Promise.all(dls.map((d) => d.dl.result));
  const newResults = await Promise.all(news.map((d) => d.dl.result));
  const counters = await lab.counters();

  t.diagnostic(
    `${fam}: route changed at +${changedAt - t0} ms; holdfast /status showed if2's default route ${seenAfter} ms later`,
  );
  dls.forEach((d, i) => {
    const r = results[i];
    const rec = server.record(d.tag);
    t.diagnostic(
      `${fam} ${d.kind}: ${atChange[i]} B at the change, exit ${r.code}, ${r.bytes}/${BYTES} B in ${r.endedAt - r.startedAt} ms, ` +
        `sha256 ${r.sha256 === expectedSha256(d.seed, BYTES) ? 'ok' : 'MISMATCH'}, server saw ${rec?.peer} (${NETWORK_OF_PEER[rec?.peer ?? '']}) done=${rec?.done}`,
    );
  });
  news.forEach((d, i) => {
    const r = newResults[i];
    const rec = server.record(d.tag);
    t.diagnostic(
      `${fam} new ${d.kind} (began +${newBegan[i].startedAt - t0} ms): exit ${r.code}, ${r.bytes}/${d.bytes} B, server saw ${rec?.peer} (${NETWORK_OF_PEER[rec?.peer ?? '']})`,
    );
  });
  t.diagnostic(`${fam}: /whoami to ${old.ip} via SOCKS while its flows lived came from ${affinityPeer} (${NETWORK_OF_PEER[affinityPeer] ?? '?'}); counters ${JSON.stringify(counters)}`);

  // Affinity (DESIGN rule 4): a new flow to a destination with live flows joins their interface.
  assert.equal(NETWORK_OF_PEER[affinityPeer], 'net1', `${fam}: a new flow to ${old.ip} while its flows lived joined them on if1 (peer ${affinityPeer})`);

  // The flows begun on if1 finished there, complete and intact.
  dls.forEach((d, i) => {
    const r = results[i];
    assert.equal(r.code, 0, `${d.tag}: curl exit ${r.code}: ${r.stderr}`);
    assert.equal(r.bytes, BYTES, `${d.tag}: byte count`);
    assert.equal(r.sha256, expectedSha256(d.seed, BYTES), `${d.tag}: content`);
    const rec = server.record(d.tag);
    assert.equal(NETWORK_OF_PEER[rec?.peer ?? ''], 'net1', `${d.tag}: server saw it through net1 (peer ${rec?.peer})`);
    assert.equal(rec?.done, true, `${d.tag}: server finished sending`);
    const f = afterOld.find((x) => x.kind === d.kind);
    assert.ok(f, `/status after the change still lists the ${d.kind} flow`);
    assert.equal(f.egress, 'if1', `${d.kind} flow stays on if1 after the change`);
  });
  // New flows took if2.
  news.forEach((d, i) => {
    const r = newResults[i];
    assert.equal(r.code, 0, `${d.tag}: curl exit ${r.code}: ${r.stderr}`);
    assert.equal(r.bytes, d.bytes, `${d.tag}: byte count`);
    assert.equal(r.sha256, expectedSha256(d.seed, d.bytes), `${d.tag}: content`);
    assert.equal(NETWORK_OF_PEER[newBegan[i].peer], 'net2', `${d.tag}: server saw it through net2 (peer ${newBegan[i].peer})`);
    const f = afterNew.find((x) => x.kind === d.kind);
    assert.ok(f, `/status lists the new ${d.kind} flow to ${fresh.ip}: ${JSON.stringify(st2.flows)}`);
    assert.equal(f.egress, 'if2', `new ${d.kind} flow placed on if2`);
  });
}

test('flows begun on if1 stay on if1 after a better default via if2, new flows take if2 (IPv4)', holdfastTestOptions(), (t) => handover(t, 'IPv4'));

test('flows begun on if1 stay on if1 after a better default via if2, new flows take if2 (IPv6)', holdfastTestOptions(), (t) => handover(t, 'IPv6'));
