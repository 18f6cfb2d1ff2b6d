// Issue 3, per-interface DNS, in the netns lab: each network has its own DNS server (dnsmasq on
// its router), and they answer the same name differently (svc.test is 10.200.0.1 on net1 and
// 10.200.0.2 on net2; the server listens on both and reports which one a flow connected to).
// holdfast is configured with `interfaces.if1.dns` and `interfaces.if2.dns`; a name is resolved
// with the servers of the interface that will carry the flow, queries sent from its address.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADDR, NETWORK_OF_PEER } from '../helpers/lab.js';
import {
  createLab,
  curlIn,
  Download,
  holdfastLabOptions,
  startDnsmasq,
  startLabHoldfast,
  withDiagnostics,
  type StatusFlow,
} from '../helpers/lab-extras.js';
import { downloadPath, PacedServer, pacedServerScript } from '../helpers/paced-server.js';
import { delay, pollUntil } from '../helpers/proc.js';

const PORT = 8080;
const NAME = 'svc.test';
const ANSWER = { net1: ADDR.server.service.v4[0], net2: ADDR.server.service.v4[1] } as const;
const LINGER_MS = 500;

interface WhoAmI {
  peer: string;
  local: string;
}

test('3: a flow on each interface resolves a name with its own network\'s DNS server and gets that network\'s answer', holdfastLabOptions(60_000, { dnsmasq: true }), async (t) => {
  const lab = await createLab(t);
  const serverChild = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => serverChild.kill());
  const server = await new PacedServer(serverChild, PORT).ready();
  const dns1 = await startDnsmasq(t, lab, 'r1', [ADDR.r1.host.v4], { [NAME]: [ANSWER.net1] });
  const dns2 = await startDnsmasq(t, lab, 'r2', [ADDR.r2.host.v4], { [NAME]: [ANSWER.net2] });
  const hf = await startLabHoldfast(t, lab, {
    affinity: { mode: 'host', linger: `${LINGER_MS}ms` },
    interfaces: { if1: { dns: [ADDR.r1.host.v4] }, if2: { dns: [ADDR.r2.host.v4] } },
  });

  await withDiagnostics(t, lab, hf, async () => {
    const whoami = async (what: string): Promise<WhoAmI> => {
      const r = await curlIn(lab, ['--socks5-hostname', hf.proxy, `http://${NAME}:${PORT}/whoami`], 5);
      assert.equal(r.code, 0, `${what}: curl exit ${r.code}: ${r.stderr.trim()}`);
      return JSON.parse(r.stdout) as WhoAmI;
    };

    // 1. Only if1: a long download to the name, resolved by net1's server, pinned to if1.
    const tag = 'dns-long';
    const long = new Download(t, lab, tag, `http://${NAME}:${PORT}${downloadPath({ bytes: 6 * 1024 * 1024, rate: 1024 * 1024, seed: 70, tag })}`, [
      '--max-time',
      '20',
      '--socks5-hostname',
      hf.proxy,
    ]);
    const a = await server.waitFor(tag, 'request', 5000);
    t.diagnostic(`if1 only: ${NAME} connected to ${a.local} from ${a.peer} (${NETWORK_OF_PEER[a.peer]})`);
    assert.equal(a.local, ANSWER.net1, `resolved with net1's server: ${NAME} = ${ANSWER.net1}`);
    assert.equal(NETWORK_OF_PEER[a.peer], 'net1', 'through net1');

    // 2. A better route via if2; while the download lives, affinity keeps the name on if1, and
    //    if1's server resolves it.
    await lab.addBetterRouteViaIf2();
    await pollUntil(async () => ((await hf.status()).interfaces.find((i) => i.name === 'if2')?.defaultRoutes?.length ? true : undefined), {
      timeoutMs: 5000,
      intervalMs: 50,
      what: "holdfast's /status showing if2's default route",
    });
    const b = await whoami('during the download');
    t.diagnostic(`after the change, affinity: ${NAME} connected to ${b.local} from ${b.peer} (${NETWORK_OF_PEER[b.peer]})`);
    assert.equal(b.local, ANSWER.net1, `affinity: resolved with net1's server (${ANSWER.net1})`);
    assert.equal(NETWORK_OF_PEER[b.peer], 'net1', 'affinity: through net1');

    // 3. The download ends, the affinity lingers out: the name now goes to if2 and is resolved
    //    there, by net2's server.
    await long.child.kill();
    await pollUntil(async () => ((await hf.status()).flows.length === 0 ? true : undefined), {
      timeoutMs: 3000,
      intervalMs: 50,
      what: 'no live flows',
    });
    await delay(LINGER_MS + 200); // the linger is a timeout, not an event
    const tagC = 'dns-if2';
    const c2 = new Download(t, lab, tagC, `http://${NAME}:${PORT}${downloadPath({ bytes: 2 * 1024 * 1024, rate: 1024 * 1024, seed: 71, tag: tagC })}`, [
      '--max-time',
      '10',
      '--socks5-hostname',
      hf.proxy,
    ]);
    const c = await server.waitFor(tagC, 'request', 5000);
    const st = await hf.status();
    const flow = st.flows.find((f: StatusFlow) => f.dst.startsWith(NAME));
    t.diagnostic(`after the linger: ${NAME} connected to ${c.local} from ${c.peer} (${NETWORK_OF_PEER[c.peer]}); /status ${JSON.stringify(flow)}`);
    assert.equal(c.local, ANSWER.net2, `resolved with net2's server: ${NAME} = ${ANSWER.net2}`);
    assert.equal(NETWORK_OF_PEER[c.peer], 'net2', 'through net2');
    assert.equal(flow?.egress, 'if2', '/status: pinned to if2');
    assert.equal(flow?.ip, ANSWER.net2, "/status: the address net2's server gave");
    assert.equal((await c2.result).code, 0, 'the if2 download completed');

    // Each server was asked only from its own network's address.
    const q1 = dns1.queries();
    const q2 = dns2.queries();
    t.diagnostic(`net1 DNS queries: ${q1.map((l) => l.replace(/^.*(query\[)/, '$1')).join('; ')}`);
    t.diagnostic(`net2 DNS queries: ${q2.map((l) => l.replace(/^.*(query\[)/, '$1')).join('; ')}`);
    assert.ok(q1.some((l) => l.includes(`query[A] ${NAME} from ${ADDR.host.if1.v4}`)), `net1's server was asked from if1's address`);
    assert.ok(q2.some((l) => l.includes(`query[A] ${NAME} from ${ADDR.host.if2.v4}`)), `net2's server was asked from if2's address`);
    assert.ok(q1.every((l) => !l.includes(ADDR.host.if2.v4)), "net1's server never heard from if2's address");
    assert.ok(q2.every((l) => !l.includes(ADDR.host.if1.v4)), "net2's server never heard from if1's address");
  });
});
