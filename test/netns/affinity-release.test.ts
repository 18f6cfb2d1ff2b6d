// Issue 12, in the netns lab: a plain-HTTP download through the forwarder (curl -x) that the
// client abandons mid-response gives its destination back: after `affinity.linger`, a new flow to
// the same server follows the better route via if2 (placed by the route; the server sees net2).
// Before the fix the abandoned download's affinity was never released, so every new flow to that
// host stayed "placed by affinity" on if1 for good.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { ADDR, NETWORK_OF_PEER, type Lab } from '../helpers/lab.js';
import { createLab, Download, holdfastLabOptions, startLabHoldfast, withDiagnostics } from '../helpers/lab-extras.js';
import { downloadPath, PacedServer, pacedServerScript } from '../helpers/paced-server.js';
import { delay } from '../helpers/proc.js';

const PORT = 8080;
const RATE = 1024 * 1024;
const LINGER_MS = 2000;
const SERVER = ADDR.server.service.v4[0];

async function startServer(t: TestContext, lab: Lab): Promise<PacedServer> {
  const child = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => child.kill());
  return new PacedServer(child, PORT).ready();
}

test('12: a forwarded download the client abandons releases its destination after the linger: new flows go via if2', holdfastLabOptions(60_000), async (t) => {
  const lab = await createLab(t, { ipv6: false });
  const server = await startServer(t, lab);
  const hf = await startLabHoldfast(t, lab, { affinity: { mode: 'host', linger: LINGER_MS } });
  await withDiagnostics(t, lab, hf, async () => {
    // 10 MB at 1 MB/s; curl gives up after 2 s, mid-response
    const url = `http://${SERVER}:${PORT}${downloadPath({ bytes: 10 * RATE, rate: RATE, seed: 3, tag: 'abandoned' })}`;
    const dl = new Download(t, lab, 'abandoned', url, ['--max-time', '2', '-x', `http://${hf.proxy}`]);
    const began = await server.waitFor('abandoned', 'request', 10_000);
    assert.equal(NETWORK_OF_PEER[began.peer], 'net1', 'the download began through net1');
    await lab.addBetterRouteViaIf2();
    const r = await dl.result;
    assert.equal(r.code, 28, 'curl gave up mid-response (its --max-time)');
    assert.ok(r.bytes > 0 && r.bytes < 10 * RATE, `abandoned after ${r.bytes} B`);
    const close = await hf.waitForLog((l) => l.msg === 'flow close' && l.kind === 'http-forward', 10_000, 'the forwarded flow to close');
    assert.equal(close.reason, 'client left');
    assert.equal(close.code, undefined, 'a client that leaves is not an error');
    // the linger runs on holdfast's clock: wait it out (a scheduled action), then a new flow
    await delay(LINGER_MS + 500);
    const who = await lab.exec('host', 'curl', ['-sS', '--max-time', '5', '-x', `http://${hf.proxy}`, `http://${SERVER}:${PORT}/whoami`]);
    const peer = (JSON.parse(who.stdout) as { peer: string }).peer;
    const opens = hf.logs().filter((l) => l.msg === 'flow open' && l.kind === 'http-forward');
    const last = opens[opens.length - 1];
    assert.equal(last.egress, 'if2', `the new flow went via if2: ${JSON.stringify(last)}`);
    assert.equal(last.placedBy, 'route', 'placed by the route, not by a stale affinity');
    assert.equal(NETWORK_OF_PEER[peer], 'net2', 'the server saw the new flow through net2');
  });
});
