// Issue 14 part 2 in the netns lab: three forwarded downloads (curl -x) pinned to if1; if2 gets a
// better default route, then if1 loses carrier past the grace. The download from a server with
// Range support continues through net2 by a Range + If-Range request and completes intact
// (checksum) with no break the client sees; the one whose file changed between the two requests
// fails with an unmixed prefix of the first version; the one from a server without Range
// support is cut as before.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { ADDR, NETWORK_OF_PEER, type Lab } from '../helpers/lab.js';
import { createLab, Download, holdfastLabOptions, startLabHoldfast, withDiagnostics } from '../helpers/lab-extras.js';
import { downloadPath, expectedSha256, PacedServer, pacedServerScript, type PacedServerEvent } from '../helpers/paced-server.js';
import { pollUntil } from '../helpers/proc.js';

const PORT = 8080;
const RATE = 1024 * 1024;
const GRACE_MS = 1500;

async function startServer(t: TestContext, lab: Lab): Promise<PacedServer> {
  const child = lab.spawn('server', [process.execPath, pacedServerScript(), '--port', String(PORT)]);
  t.after(() => child.kill());
  return new PacedServer(child, PORT).ready();
}

/** The server's records of the requests with `tag`, as they began (the first one, on the dead path, never ends there). */
const requestsOf = (server: PacedServer, tag: string) =>
  server.child.jsonLines<PacedServerEvent>().filter((e) => e.event === 'request' && e.tag === tag);

/** The status the server answered to request `id`, once it ended. */
const statusOf = (server: PacedServer, id: number) =>
  pollUntil(() => server.child.jsonLines<PacedServerEvent>().find((e) => e.event === 'end' && e.id === id)?.status, {
    timeoutMs: 3000,
    intervalMs: 20,
    what: `the end of request ${id}`,
  });

test('14: a forwarded download survives if1 losing carrier by a Range request through net2; a changed file or no Range support: cut, never mixed', holdfastLabOptions(90_000), async (t) => {
  const lab = await createLab(t);
  const server = await startServer(t, lab);
  const hf = await startLabHoldfast(t, lab, { grace: `${GRACE_MS}ms` });
  await withDiagnostics(t, lab, hf, async () => {
    const bytes = 6 * RATE; // 6 s at the paced rate: the resumed part takes seconds, by construction
    const host = ADDR.server.service.v4[0];
    const kinds = [
      { tag: 'resume', seed: 61, ranges: true, changes: false },
      { tag: 'changed', seed: 62, ranges: true, changes: true },
      { tag: 'no-ranges', seed: 63, ranges: false, changes: false },
    ];
    const dls = kinds.map(
      (k) =>
        new Download(t, lab, k.tag, `http://${host}:${PORT}${downloadPath({ bytes, rate: RATE, ...k })}`, [
          '--max-time',
          '40',
          '-x',
          `http://${hf.proxy}`,
        ]),
    );
    const began = await Promise.all(dls.map((d) => server.waitFor(d.tag, 'request', 10_000)));
    for (const b of began) assert.equal(NETWORK_OF_PEER[b.peer], 'net1', `${b.tag} began through net1 (peer ${b.peer})`);
    await pollUntil(() => (dls.every((d) => d.bytes > 512 * 1024) ? true : undefined), {
      timeoutMs: 5000,
      intervalMs: 50,
      what: 'every download past 512 KiB',
    });
    // the laptop gets a second network, then loses the first
    await lab.addBetterRouteViaIf2();
    const lossAt = Date.now();
    await lab.carrierDown('if1');
    t.after(() => lab.carrierUp('if1').catch(() => {}));

    const resumed = await hf.waitForLog((l) => l.msg === 'flow resumed', GRACE_MS + 8000, '"flow resumed"');
    // while the rest streams through net2, /status shows the flow on if2, resumed once
    const st = await pollUntil(
      async () => {
        const s = await hf.status();
        return s.flows.some((f) => f.resumed === 1) ? s : undefined;
      },
      { timeoutMs: 3000, intervalMs: 50, what: 'a flow with resumed 1 in /status' },
    );
    const moved = st.flows.find((f) => f.resumed === 1)!;
    assert.equal(moved.egress, 'if2', 'the resumed flow is shown on its new interface');

    const results = await Promise.all(dls.map((d) => d.result));
    const [ok, changed, plain] = results;
    for (const r of results) t.diagnostic(`${r.tag}: curl exit ${r.code}, ${r.bytes}/${bytes} B, ended ${r.endedAt - lossAt} ms after the loss: ${r.stderr.trim()}`);
    const again = requestsOf(server, 'resume');
    const cutLine = hf.logs().find((l) => l.msg === 'egress cut' && l.egress === 'if1');
    t.diagnostic(
      `if1 lost at +0; "egress cut" at +${cutLine ? cutLine.time - lossAt : '?'} ms (grace ${GRACE_MS} ms); "flow resumed" at +${resumed.time - lossAt} ms ` +
        `(${cutLine ? resumed.time - cutLine.time : '?'} ms after the cut: new dial on if2 + the 206's head)`,
    );
    t.diagnostic(`resumed: ${JSON.stringify(resumed)}; requests: ${JSON.stringify(again.map((e) => ({ peer: e.peer, range: e.range })))}`);

    // 1. the download with Range support: intact, the rest asked for from net2
    assert.equal(ok.code, 0, `resume: curl exit ${ok.code}: ${ok.stderr}`);
    assert.equal(ok.bytes, bytes);
    assert.equal(ok.sha256, expectedSha256(61, bytes), 'resume: content intact');
    assert.equal(again.length, 2, 'resume: two requests');
    assert.equal(NETWORK_OF_PEER[again[1].peer], 'net2', `the Range request came through net2 (peer ${again[1].peer})`);
    assert.equal(again[1].range, `bytes=${String(resumed.offset)}-${bytes - 1}`);
    assert.equal(await statusOf(server, again[1].id), 206);
    assert.equal(resumed.from, 'if1');
    assert.equal(resumed.to, 'if2');

    // 2. the file changed between the two requests: the client fails with the first version's bytes only
    assert.notEqual(changed.code, 0, 'changed: curl failed');
    assert.ok(changed.bytes < bytes, 'changed: incomplete');
    assert.equal(changed.sha256, expectedSha256(62, changed.bytes), 'changed: what the client got is a prefix of version 1, unmixed');
    const changedReqs = requestsOf(server, 'changed');
    assert.equal(changedReqs.length, 2, 'changed: a Range request was tried');
    assert.equal(await statusOf(server, changedReqs[1].id), 200, 'changed: the server answered with the new version, which was refused');

    // 3. no Range support: cut as before, never asked again
    assert.notEqual(plain.code, 0, 'no-ranges: curl failed');
    assert.equal(plain.sha256, expectedSha256(63, plain.bytes), 'no-ranges: an unmixed prefix');
    assert.equal(requestsOf(server, 'no-ranges').length, 1, 'no-ranges: no second request');
    assert.ok(plain.endedAt - lossAt >= GRACE_MS, 'no-ranges: not cut before the grace');

    const end = await hf.status();
    assert.deepEqual(end.forward, { resumes: 1, resumeFailures: 1 });
    const closes = await pollUntil(
      () => {
        const c = hf.logs().filter((l) => l.msg === 'flow close');
        return c.length >= 3 ? c : undefined;
      },
      { timeoutMs: 2000, intervalMs: 20, what: 'three "flow close" lines' },
    );
    const reasons = closes.map((c) => `${String(c.reason)}/${String(c.code ?? '')}`).sort();
    assert.deepEqual(reasons, ['cut/HF_EGRESS_LOST', 'cut/HF_EGRESS_LOST', 'done/'], JSON.stringify(closes));
  });
});
