// Issue 15, roles and destination rules, in the netns lab (root; see test/helpers/lab.ts). if2
// always has the better default route (metric 50 against if1's 100), so the kernel picks it for
// every new flow; roles and rules are what send flows to if1 instead.
// - backup: if2 takes no new flows while if1 lives, takes them when if1 loses carrier, and gives
//   new flows back when if1 returns while its own download finishes whole on if2.
// - never: if2 takes nothing; with if1 gone the flow is refused (HTTP 503, SOCKS 0x03) and not one
//   packet goes through router2.
// - rules: a rule by CIDR and one by name suffix send flows via if1; the name is resolved with
//   if1's DNS server; after SIGHUP without the rules, new flows go to if2 while a live one stays.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { ADDR, NETWORK_OF_PEER } from '../helpers/lab.js';
import {
  CLI,
  createLab,
  curlIn,
  Download,
  holdfastLabOptions,
  startDnsmasq,
  startLabHoldfast,
  withDiagnostics,
  type LabHoldfast,
  type Status,
  type StatusInterface,
} from '../helpers/lab-extras.js';
import type { Lab } from '../helpers/lab.js';
import { downloadPath, expectedSha256, PacedServer, pacedServerScript } from '../helpers/paced-server.js';
import { delay, pollUntil } from '../helpers/proc.js';

const PORT = 8080;
const RATE = 1024 * 1024;
const SVC = ADDR.server.service.v4;

interface WhoAmI {
  peer: string;
  local: string;
}

type RoleInterface = StatusInterface & { type?: string; metered?: boolean | null; role?: string; roleBy?: string };

async function whoami(lab: Lab, hf: LabHoldfast, host: string, what: string): Promise<WhoAmI & { network: string }> {
  const r = await curlIn(lab, ['--socks5-hostname', hf.proxy, `http://${host}:${PORT}/whoami`], 5);
  assert.equal(r.code, 0, `${what}: curl exit ${r.code}: ${r.stderr.trim()}`);
  const w = JSON.parse(r.stdout) as WhoAmI;
  return { ...w, network: NETWORK_OF_PEER[w.peer] ?? `unknown peer ${w.peer}` };
}

/** Wait until holdfast's /status shows `ifname` usable (or not). */
async function untilUsable(hf: LabHoldfast, ifname: string, usable: boolean): Promise<Status> {
  return pollUntil(
    async () => {
      const st = await hf.status();
      return st.interfaces.find((i) => i.name === ifname)?.up === usable ? st : undefined;
    },
    { timeoutMs: 5000, intervalMs: 50, what: `holdfast's /status showing ${ifname} ${usable ? 'up' : 'down'}` },
  );
}

async function labWithServer(t: Parameters<typeof createLab>[0]): Promise<{ lab: Lab; server: PacedServer }> {
  const lab = await createLab(t, { ipv6: false });
  const child = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => child.kill());
  const server = await new PacedServer(child, PORT).ready();
  await lab.addBetterRouteViaIf2();
  const kernel = await lab.exec('host', 'ip', ['route', 'get', SVC[0]]);
  assert.match(kernel.stdout, /dev if2/, `the kernel routes new flows via if2: ${kernel.stdout.trim()}`);
  return { lab, server };
}

test('15: if2 has the better metric but role backup: no new flows while if1 lives, all when it dies, new flows back when it returns while its download finishes whole', holdfastLabOptions(90_000), async (t) => {
  const { lab, server } = await labWithServer(t);
  const hf = await startLabHoldfast(t, lab, { interfaces: { if2: { role: 'backup' } }, grace: '30s' });

  await withDiagnostics(t, lab, hf, async () => {
    const st0 = await hf.status();
    const if2 = st0.interfaces.find((i) => i.name === 'if2') as RoleInterface | undefined;
    const if1 = st0.interfaces.find((i) => i.name === 'if1') as RoleInterface | undefined;
    t.diagnostic(`/status: if1 ${JSON.stringify({ type: if1?.type, metered: if1?.metered, role: if1?.role })}, if2 ${JSON.stringify({ type: if2?.type, metered: if2?.metered, role: if2?.role })}`);
    assert.equal(if2?.role, 'backup', '/status shows if2 as backup');
    assert.equal(if2?.roleBy, 'interface');
    assert.equal(if1?.role, 'normal');
    assert.equal(if2?.type, 'other', 'a veth is type other');
    assert.equal((st0 as Status & { best?: { ipv4: string | null } }).best?.ipv4, 'if1', '/status: new flows go to if1');
    // /metrics says the same (holdfast_interface_best counts roles)
    const m = await curlIn(lab, ['-s', `http://${hf.proxy}/metrics`], 5);
    assert.match(m.stdout, /^holdfast_interface_best\{interface="if1",family="ipv4"\} 1$/m, '/metrics: new IPv4 flows go to if1');
    assert.match(m.stdout, /^holdfast_interface_best\{interface="if2",family="ipv4"\} 0$/m, '/metrics: not to the backup if2');

    // 1. both live: new flows go to if1, against the kernel's choice
    for (const host of [SVC[0], SVC[1]]) {
      assert.equal((await whoami(lab, hf, host, `both up, ${host}`)).network, 'net1', `both up: ${host} through net1`);
    }

    // 2. if1 loses carrier: the backup takes new flows; a download begins there
    await lab.carrierDown('if1');
    await untilUsable(hf, 'if1', false);
    assert.equal((await whoami(lab, hf, SVC[0], 'if1 down')).network, 'net2', 'if1 down: through net2');
    const tag = 'roles-backup-dl';
    const bytes = 5 * RATE;
    const dl = new Download(t, lab, tag, `http://${SVC[1]}:${PORT}${downloadPath({ bytes, rate: RATE, seed: 151, tag })}`, [
      '--max-time',
      '20',
      '--socks5-hostname',
      hf.proxy,
    ]);
    const began = await server.waitFor(tag, 'request', 5000);
    assert.equal(NETWORK_OF_PEER[began.peer], 'net2', `the download began through net2 (peer ${began.peer})`);

    // 3. if1 returns while the download runs: new flows go back to if1 (the same destination
    //    too: affinity stays inside the best role); the download stays on if2
    await lab.carrierUp('if1');
    const st = await untilUsable(hf, 'if1', true);
    assert.ok(dl.bytes < bytes, `the download was still running when if1 returned (${dl.bytes}/${bytes} B)`);
    assert.equal((await whoami(lab, hf, SVC[0], 'if1 back')).network, 'net1', 'if1 back: a new flow through net1');
    assert.equal((await whoami(lab, hf, SVC[1], 'if1 back, same destination')).network, 'net1', 'if1 back: the download\'s destination through net1 too');
    const live = st.flows.find((f) => f.dst.startsWith(SVC[1]));
    assert.equal(live?.egress, 'if2', `/status: the download is still pinned to if2: ${JSON.stringify(live)}`);

    const r = await dl.result;
    const end = await server.waitFor(tag, 'end', 5000);
    assert.equal(r.code, 0, `the download finished: curl exit ${r.code}: ${r.stderr}`);
    assert.equal(r.bytes, bytes, 'every byte arrived');
    assert.equal(r.sha256, expectedSha256(151, bytes), 'the bytes are the right ones');
    assert.equal(NETWORK_OF_PEER[end.peer], 'net2', 'the server sent it all through net2');
  });
});

test('15: role never: if2 takes no flow; with if1 gone the flow is refused (HTTP 503, SOCKS 0x03), nothing through router2', holdfastLabOptions(60_000), async (t) => {
  const { lab } = await labWithServer(t);
  const hf = await startLabHoldfast(t, lab, { interfaces: { 'if[2-9]': { role: 'never' } }, grace: '30s' });

  await withDiagnostics(t, lab, hf, async () => {
    const if2 = (await hf.status()).interfaces.find((i) => i.name === 'if2') as RoleInterface | undefined;
    assert.equal(if2?.role, 'never', 'a glob gives if2 role never');
    assert.equal((await whoami(lab, hf, SVC[0], 'both up')).network, 'net1', 'both up: through net1');

    await lab.carrierDown('if1');
    await untilUsable(hf, 'if1', false);
    const http = await curlIn(lab, ['-o', '/dev/null', '-w', '%{http_code}', '-x', `http://${hf.proxy}`, `http://${SVC[0]}:${PORT}/whoami`], 5);
    assert.equal(http.stdout.trim(), '503', `HTTP forward refused with 503 (curl exit ${http.code}: ${http.stderr.trim()})`);
    const socks = await curlIn(lab, ['--socks5-hostname', hf.proxy, `http://${SVC[1]}:${PORT}/whoami`], 5);
    assert.notEqual(socks.code, 0, 'SOCKS5 CONNECT refused');
    assert.match(socks.stderr, /\(3\)|network unreachable/i, `SOCKS reply 0x03: ${socks.stderr.trim()}`);
    const refusals = hf.logs().filter((l) => l.msg === 'flow close' && l.code === 'HF_NO_EGRESS');
    assert.ok(refusals.length >= 2, `both refusals logged with HF_NO_EGRESS: ${JSON.stringify(refusals)}`);
    const counters = await lab.counters();
    assert.equal(counters['r2.forwarded'] ?? 0, 0, `not one packet forwarded through router2: ${JSON.stringify(counters)}`);

    // `holdfast status` and `holdfast doctor` show type, metered and role
    const status = await lab.exec('host', process.execPath, [CLI, 'status', '--url', `http://${hf.proxy}`], { timeoutMs: 10_000 });
    t.diagnostic(`holdfast status:\n${status.stdout}`);
    assert.match(status.stdout, /TYPE\s+ROLE/);
    assert.match(status.stdout, /\bif2\s+up\s+other\s+never\b/, 'the status table shows if2 as never');
    const doc = await lab.exec('host', process.execPath, [CLI, 'doctor', '--json', '--no-system-proxy', '--config', hf.configFile], { allowFail: true, timeoutMs: 20_000 });
    const checks = (JSON.parse(doc.stdout) as { checks: { id: string; summary: string }[] }).checks;
    const if2check = checks.find((c) => c.id === 'interface:if2');
    assert.match(if2check?.summary ?? '', /other, role never \(by interface\)/, `doctor: ${if2check?.summary}`);
  });
});

test('15: a rule by CIDR and one by name suffix send flows via if1 against the kernel\'s choice, the name resolved by if1\'s DNS; SIGHUP without them sends new flows to if2, a live one stays', holdfastLabOptions(90_000, { dnsmasq: true }), async (t) => {
  const { lab, server } = await labWithServer(t);
  // each network's DNS answers the names with its own service address
  const names = ['www.svc.test', 'other.svc.test'];
  await startDnsmasq(t, lab, 'r1', [ADDR.r1.host.v4], Object.fromEntries(names.map((n) => [n, [SVC[0]]])));
  await startDnsmasq(t, lab, 'r2', [ADDR.r2.host.v4], Object.fromEntries(names.map((n) => [n, [SVC[1]]])));
  // a short linger: the earlier flows' affinity must not decide where flows go after the reload
  const base = {
    interfaces: { if1: { dns: [ADDR.r1.host.v4] }, if2: { dns: [ADDR.r2.host.v4] } },
    affinity: { mode: 'host', linger: '100ms' },
    grace: '30s',
    log: { level: 'info' },
    listen: ['127.0.0.1:1080'],
  };
  const hf = await startLabHoldfast(t, lab, {
    ...base,
    rules: [
      { to: '*.svc.test', via: 'if1' },
      { to: `${SVC[1]}/32`, ports: [PORT], via: ['wg0', 'if1'] },
    ],
  });

  await withDiagnostics(t, lab, hf, async () => {
    // no rule matches: the kernel's choice (if2)
    assert.equal((await whoami(lab, hf, SVC[0], 'no rule')).network, 'net2', 'no rule: through net2');
    // the CIDR rule (wg0 is not there: the next via entry)
    assert.equal((await whoami(lab, hf, SVC[1], 'CIDR rule')).network, 'net1', 'CIDR rule: through net1');
    // the name rule: resolved by net1's server (its answer is SVC[0]) and sent through net1
    const named = await whoami(lab, hf, 'www.svc.test', 'name rule');
    assert.equal(named.network, 'net1', 'name rule: through net1');
    assert.equal(named.local, SVC[0], "name rule: resolved with if1's DNS server");

    // a live download under the name rule, then a reload without rules
    const tag = 'roles-rule-dl';
    const bytes = 5 * RATE;
    const dl = new Download(t, lab, tag, `http://www.svc.test:${PORT}${downloadPath({ bytes, rate: RATE, seed: 152, tag })}`, [
      '--max-time',
      '20',
      '--socks5-hostname',
      hf.proxy,
    ]);
    const began = await server.waitFor(tag, 'request', 5000);
    assert.equal(NETWORK_OF_PEER[began.peer], 'net1', 'the download began through net1');
    writeFileSync(hf.configFile, JSON.stringify(base, null, 2) + '\n');
    hf.child.proc.kill('SIGHUP');
    await hf.waitForLog((l) => l.msg === 'reloaded', 5000, 'holdfast "reloaded"');
    assert.ok(dl.bytes < bytes, `the download was still running at the reload (${dl.bytes}/${bytes} B)`);

    const after = await whoami(lab, hf, 'other.svc.test', 'after the reload');
    assert.equal(after.network, 'net2', 'after the reload: through net2');
    assert.equal(after.local, SVC[1], "after the reload: resolved with if2's DNS server");
    await delay(200); // the CIDR flow's affinity lingers out (a timeout, not an event)
    assert.equal((await whoami(lab, hf, SVC[1], 'after the reload, the CIDR')).network, 'net2', 'the CIDR rule is gone too');

    const r = await dl.result;
    const end = await server.waitFor(tag, 'end', 5000);
    assert.equal(r.code, 0, `the download finished: curl exit ${r.code}: ${r.stderr}`);
    assert.equal(r.sha256, expectedSha256(152, bytes), 'every byte, the right ones');
    assert.equal(NETWORK_OF_PEER[end.peer], 'net1', 'the download stayed on net1 after the reload');
  });
});
