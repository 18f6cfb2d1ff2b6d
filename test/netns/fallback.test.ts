// Issue 3, fallback (DESIGN rule 6), in the netns lab: if2 is up with the better default route,
// but router2 silently drops everything it should forward (no RST, no ICMP: a dead uplink behind
// a live link). New flows still connect, through if1, without waiting for if2's dial.timeout: the
// if2 attempt gets `fallback.delay` (300 ms), then if1 is raced and wins (asserted: under 3 s,
// less than the 5 s dial.timeout; a 2-core machine under load is slower than the 1 s once asserted); if2 then sits out its back-off, so the
// next flows go to if1 at once. /status shows them placed by 'fallback'.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADDR, NETWORK_OF_PEER } from '../helpers/lab.js';
import {
  createLab,
  Download,
  dropRouterInput,
  holdfastLabOptions,
  insertForwardRule,
  ruleCount,
  startDnsmasq,
  startLabHoldfast,
  withDiagnostics,
  type LogLine,
  type StatusFlow,
} from '../helpers/lab-extras.js';
import { downloadPath, PacedServer, pacedServerScript } from '../helpers/paced-server.js';

const PORT = 8080;
const RATE = 1024 * 1024;
const FALLBACK_DELAY_MS = 300;

test('3: if2 has the better route but drops everything: new flows connect through if1 after the fallback delay (not after the dial timeout), placed by fallback', holdfastLabOptions(), async (t) => {
  const lab = await createLab(t);
  const serverChild = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => serverChild.kill());
  const server = await new PacedServer(serverChild, PORT).ready();
  await lab.addBetterRouteViaIf2();
  // router2 forwards nothing, silently (ARP/ND to the router itself still work: the link is up)
  await insertForwardRule(lab, 'r2', '', 'blackhole');
  const hf = await startLabHoldfast(t, lab, { fallback: { delay: `${FALLBACK_DELAY_MS}ms` }, dial: { timeout: '5s' } });

  await withDiagnostics(t, lab, hf, async () => {
    const st0 = await hf.status();
    const best = st0.interfaces.find((i) => i.name === 'if2');
    assert.ok(best?.up && (best.defaultRoutes?.length ?? 0) > 0, `holdfast sees if2 up with its default route: ${JSON.stringify(st0.interfaces)}`);
    const kernel = await lab.exec('host', 'ip', ['route', 'get', ADDR.server.service.v4[0]]);
    assert.match(kernel.stdout, /dev if2/, `the kernel routes new flows via if2: ${kernel.stdout.trim()}`);

    // Each flow to a destination of its own (no affinity between them), one after the other:
    // the first finds if2 dead, the later ones find it in back-off.
    const plan = [
      { tag: 'fb-socks5-v4', host: ADDR.server.service.v4[0], ip: ADDR.server.service.v4[0], args: ['--socks5-hostname', hf.proxy] },
      { tag: 'fb-socks5-v6', host: `[${ADDR.server.service.v6[0]}]`, ip: ADDR.server.service.v6[0], args: ['--socks5-hostname', hf.proxy] },
      { tag: 'fb-http-connect-v4', host: ADDR.server.service.v4[1], ip: ADDR.server.service.v4[1], args: ['-p', '-x', `http://${hf.proxy}`] },
    ];
    const bytes = 3 * RATE; // 3 s: the flows are still live when /status is read
    const dls: Download[] = [];
    const began: Awaited<ReturnType<PacedServer["waitFor"]>>[] = [];
    for (const [i, p] of plan.entries()) {
      const dl = new Download(t, lab, p.tag, `http://${p.host}:${PORT}${downloadPath({ bytes, rate: RATE, seed: 50 + i, tag: p.tag })}`, [
        '--max-time',
        '15',
        ...p.args,
      ]);
      dls.push(dl);
      began.push(await server.waitFor(p.tag, 'request', 5000));
    }
    const st = await hf.status();
    const opens = hf.logs().filter((l: LogLine) => l.msg === 'flow open');
    const blackholed = await ruleCount(lab, 'r2', 'blackhole');

    const rows = plan.map((p, i) => {
      const flow = st.flows.find((f: StatusFlow) => f.dst.includes(p.ip));
      const open = flow ? opens.find((l) => l.flow === flow.id) : undefined;
      return {
        ...p,
        flow,
        open,
        clientMs: began[i].startedAt - dls[i].startedAt,
        holdfastMs: flow && open ? open.time - flow.startedAt : undefined,
      };
    });
    for (const r of rows) {
      t.diagnostic(
        `${r.tag}: server saw the request ${r.clientMs} ms after curl started (peer ${began[rows.indexOf(r)].peer}); ` +
          `holdfast connected ${r.holdfastMs ?? '?'} ms after the request; /status: ${r.flow ? `${r.flow.egress} placedBy ${r.flow.placedBy}` : 'missing'}; ` +
          `attempts "${String(r.open?.attempts ?? '')}"`,
      );
    }
    t.diagnostic(`router2 blackholed ${blackholed} packets`);

    for (const [i, r] of rows.entries()) {
      assert.equal(NETWORK_OF_PEER[began[i].peer], 'net1', `${r.tag}: server saw it through net1 (peer ${began[i].peer})`);
      assert.ok(r.clientMs < 3000, `${r.tag}: connected after the fallback delay, not after if2's dial.timeout (5 s): ${r.clientMs} ms from curl's start to the server's request`);
      assert.ok(r.flow, `${r.tag}: /status lists the flow: ${JSON.stringify(st.flows)}`);
      assert.equal(r.flow.egress, 'if1', `${r.tag}: pinned to if1`);
      assert.equal(r.flow.placedBy, 'fallback', `${r.tag}: placed by fallback`);
    }
    // the first flow raced: if2 was tried first and lost after the fallback delay
    assert.match(String(rows[0].open?.attempts ?? ''), /if2 .*HF_DIAL_TIMEOUT/, 'the first flow names its lost if2 attempt');
    assert.ok((rows[0].holdfastMs ?? 0) >= FALLBACK_DELAY_MS, `the first flow waited the fallback delay for if2 (${rows[0].holdfastMs} ms)`);
    // the next flows did not wait for if2 (back-off)
    for (const r of rows.slice(1)) {
      assert.ok((r.holdfastMs ?? Infinity) < FALLBACK_DELAY_MS, `${r.tag}: if2 in back-off, if1 at once (${r.holdfastMs} ms)`);
    }
    assert.ok(blackholed > 0, 'router2 dropped the if2 attempt (it was tried)');

    const results = await Promise.all(dls.map((d) => d.result));
    results.forEach((r, i) => assert.equal(r.code, 0, `${plan[i].tag}: curl exit ${r.code}: ${r.stderr}`));
    t.diagnostic(
      `fallback latency: first flow ${rows[0].holdfastMs} ms in holdfast (${rows[0].clientMs} ms seen by the client), ` +
        `during back-off ${rows.slice(1).map((r) => `${r.holdfastMs} ms (${r.clientMs} ms)`).join(', ')}`,
    );
  });
});

test('3: the same for a forwarded plain-HTTP request: it connects through if1 after the fallback delay', holdfastLabOptions(), async (t) => {
  const lab = await createLab(t);
  const serverChild = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => serverChild.kill());
  const server = await new PacedServer(serverChild, PORT).ready();
  await lab.addBetterRouteViaIf2();
  await insertForwardRule(lab, 'r2', '', 'blackhole');
  const hf = await startLabHoldfast(t, lab, { fallback: { delay: `${FALLBACK_DELAY_MS}ms` }, dial: { timeout: '5s' } });
  await withDiagnostics(t, lab, hf, async () => {
    const tag = 'fb-http-forward';
    const dl = new Download(t, lab, tag, `http://${ADDR.server.service.v4[0]}:${PORT}${downloadPath({ bytes: RATE, rate: RATE, seed: 60, tag })}`, [
      '--max-time',
      '15',
      '-x',
      `http://${hf.proxy}`,
    ]);
    const began = await server.waitFor(tag, 'request', 10_000);
    const clientMs = began.startedAt - dl.startedAt;
    const open = hf.logs().find((l) => l.msg === 'flow open' && l.kind === 'http-forward');
    t.diagnostic(`${tag}: server saw the request ${clientMs} ms after curl started (peer ${began.peer}); flow open: ${JSON.stringify(open)}`);
    assert.equal(NETWORK_OF_PEER[began.peer], 'net1', `server saw it through net1 (peer ${began.peer})`);
    assert.ok(clientMs < 3000, `connected after the fallback delay, not after if2's dial.timeout (5 s): ${clientMs} ms from curl's start to the server's request`);
    const r = await dl.result;
    assert.equal(r.code, 0, `curl exit ${r.code}: ${r.stderr}`);
  });
});

test('3: names too: when if2\'s DNS server stays silent, if1\'s answers and the flow connects through if1 without waiting for the dial timeout', holdfastLabOptions(60_000, { dnsmasq: true }), async (t) => {
  const lab = await createLab(t);
  const serverChild = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => serverChild.kill());
  const server = await new PacedServer(serverChild, PORT).ready();
  // two names (no affinity between them); each network's DNS server answers them with a service
  // address of its own
  const names = ['fb.test', 'fb2.test'];
  await startDnsmasq(t, lab, 'r1', [ADDR.r1.host.v4], Object.fromEntries(names.map((n) => [n, [ADDR.server.service.v4[0]]])));
  await startDnsmasq(t, lab, 'r2', [ADDR.r2.host.v4], Object.fromEntries(names.map((n) => [n, [ADDR.server.service.v4[1]]])));
  await lab.addBetterRouteViaIf2();
  // router2 is dead on a live link: it forwards nothing and answers nothing (its DNS included)
  await insertForwardRule(lab, 'r2', '', 'blackhole');
  await dropRouterInput(lab, 'r2', 'blackhole-in');
  const hf = await startLabHoldfast(t, lab, {
    fallback: { delay: `${FALLBACK_DELAY_MS}ms` },
    interfaces: { if1: { dns: [ADDR.r1.host.v4] }, if2: { dns: [ADDR.r2.host.v4] } },
  });
  await withDiagnostics(t, lab, hf, async () => {
    const rows = [];
    // the first name finds if2's server silent; the second finds if2 in back-off
    for (const [i, name] of names.entries()) {
      const tag = `fb-name-${i}`;
      const dl = new Download(t, lab, tag, `http://${name}:${PORT}${downloadPath({ bytes: 2 * RATE, rate: RATE, seed: 80 + i, tag })}`, [
        '--max-time',
        '15',
        '--socks5-hostname',
        hf.proxy,
      ]);
      const began = await server.waitFor(tag, 'request', 10_000);
      const st = await hf.status();
      const flow = st.flows.find((f: StatusFlow) => f.dst.startsWith(`${name}:`));
      rows.push({ tag, dl, began, flow, clientMs: began.startedAt - dl.startedAt });
      t.diagnostic(
        `${tag} (${name}): server saw the request ${began.startedAt - dl.startedAt} ms after curl started, at ${began.local} from ${began.peer}; ` +
          `/status: ${flow ? `${flow.ip} on ${flow.egress} placedBy ${flow.placedBy}` : 'missing'}`,
      );
    }
    t.diagnostic(`router2 dropped ${await ruleCount(lab, 'r2', 'blackhole-in')} packets addressed to it, ${await ruleCount(lab, 'r2', 'blackhole')} to forward`);
    for (const r of rows) {
      assert.ok(r.clientMs < 3000, `${r.tag}: connected after the fallback delay, not after dial.timeout (5 s): ${r.clientMs} ms`);
      assert.equal(r.began.local, ADDR.server.service.v4[0], `${r.tag}: the name was resolved by net1's server`);
      assert.equal(NETWORK_OF_PEER[r.began.peer], 'net1', `${r.tag}: through net1`);
      assert.equal(r.flow?.egress, 'if1', `${r.tag}: /status: on if1`);
      assert.equal(r.flow?.placedBy, 'fallback', `${r.tag}: /status: placed by fallback`);
    }
    for (const r of rows) assert.equal((await r.dl.result).code, 0, `${r.tag}: completed`);
  });
});
