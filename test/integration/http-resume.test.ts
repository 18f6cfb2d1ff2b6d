// Resumed plain-HTTP downloads (issue 14, part 2): an origin on loopback drops the connection
// mid-body; the forwarder asks again with Range and If-Range and splices the rest into the same
// response only when the answer is a 206 of exactly the missing bytes with the same validator.
// The client (real curl) gets the identical file, or a cut with a prefix of it: never mixed bytes.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { parseConfig } from '../../src/config.js';
import { run } from '../helpers/proc.js';
import { flowsDrained, startProxy, type TestProxy } from '../helpers/proxy.js';

const SIZE = 3 * 1024 * 1024;
const A = randomBytes(SIZE);
/** the same path after the file changed: same size, other bytes */
const B = randomBytes(SIZE);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** What the origin answers to a Range request. */
type Again =
  | 'honest' // a 206 of the asked range, or a 200 of the new file if If-Range does not match
  | 'full' // ignores Range: 200 with the whole file
  | 'changed' // the file changed: If-Range no longer matches, 200 with the new bytes and ETag
  | 'changed-206' // a broken origin: 206 of the new file with its new ETag, If-Range ignored
  | 'wrong-range' // a 206 that starts at 0
  | 'dies-again' // a 206 that also drops mid-body (the next one is honest)
  | 'gone'; // the origin stops listening after the first request: the new dial is refused

interface OriginOptions {
  again: Again;
  acceptRanges?: boolean;
  /** the validator of the first response: a strong ETag (default), a weak one, or Last-Modified only */
  validator?: 'etag' | 'weak' | 'last-modified';
  /** drop the first response after this many body bytes */
  cutAt?: number;
}

interface Seen {
  range?: string;
  ifRange?: string;
}

async function origin(t: TestContext, o: OriginOptions) {
  const seen: Seen[] = [];
  const etag = '"v1-abc"';
  const lastModified = 'Tue, 01 Dec 2026 10:00:00 GMT';
  const cutAt = o.cutAt ?? 1024 * 1024 + 17;
  let ranges = 0;
  const validatorHeaders = (): Record<string, string> =>
    o.validator === 'last-modified' ? { 'last-modified': lastModified } : { etag: o.validator === 'weak' ? 'W/"v1-abc"' : etag };
  /** write body[from, to) then drop the connection (FIN mid-body: undici sees "other side closed") */
  const dropAfter = (res: ServerResponse, body: Buffer) => {
    res.write(body, () => res.socket?.destroy());
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push({ range: req.headers.range, ifRange: String(req.headers['if-range'] ?? '') || undefined });
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (!range) {
      if (o.again === 'gone') server.close();
      res.writeHead(200, {
        'content-length': String(SIZE),
        ...(o.acceptRanges === false ? {} : { 'accept-ranges': 'bytes' }),
        ...validatorHeaders(),
      });
      dropAfter(res, A.subarray(0, cutAt));
      return;
    }
    ranges++;
    const start = Number(range[1]);
    const end = range[2] ? Number(range[2]) : SIZE - 1;
    const partial = (body: Buffer, headers: Record<string, string>, s = start) => {
      res.writeHead(206, { 'content-range': `bytes ${s}-${end}/${SIZE}`, 'content-length': String(end - s + 1), ...headers });
      return body.subarray(s, end + 1);
    };
    switch (o.again) {
      case 'honest':
        if (req.headers['if-range'] !== (o.validator === 'last-modified' ? lastModified : etag)) {
          res.writeHead(200, { 'content-length': String(SIZE), ...validatorHeaders() });
          res.end(B);
        } else res.end(partial(A, validatorHeaders()));
        return;
      case 'full':
        res.writeHead(200, { 'content-length': String(SIZE), ...validatorHeaders() });
        res.end(A);
        return;
      case 'changed':
        res.writeHead(200, { 'content-length': String(SIZE), etag: '"v2-def"' });
        res.end(B);
        return;
      case 'changed-206':
        res.end(partial(B, { etag: '"v2-def"' }));
        return;
      case 'wrong-range':
        res.end(partial(A, validatorHeaders(), 0));
        return;
      case 'gone':
        res.writeHead(500).end();
        return;
      case 'dies-again': {
        const body = partial(A, validatorHeaders());
        if (ranges === 1) dropAfter(res, body.subarray(0, 512 * 1024));
        else res.end(body);
        return;
      }
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, seen, etag, lastModified };
}

/** curl -x through holdfast into a file: its exit code and the bytes it wrote. */
async function download(t: TestContext, p: TestProxy, port: number): Promise<{ code: number; body: Buffer; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'hf-resume-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'file');
  const r = await run('curl', ['-sS', '--max-time', '30', '-x', p.url, '-o', out, `http://127.0.0.1:${port}/file.bin`], {
    allowFail: true,
    timeoutMs: 35_000,
  });
  let body = Buffer.alloc(0);
  try {
    body = readFileSync(out);
  } catch {
    // curl wrote nothing
  }
  return { code: r.code ?? -1, body, stderr: r.stderr };
}

interface ForwardStatus {
  forward: { resumes: number; resumeFailures: number };
}
const forwardOf = (p: TestProxy) => (p.hf.status() as unknown as ForwardStatus).forward;

/** the client got a strict prefix of the first file: cut, never mixed */
function assertCutPrefix(got: { code: number; body: Buffer }) {
  assert.notEqual(got.code, 0, 'curl must fail: the download was cut');
  assert.ok(got.body.length < SIZE, `got ${got.body.length} of ${SIZE} bytes`);
  assert.ok(A.subarray(0, got.body.length).equals(got.body), 'the bytes the client got are the first file, unmixed');
}

test('a download whose upstream drops mid-body continues by Range + If-Range: the client gets identical bytes', async (t) => {
  const p = await startProxy(t);
  const o = await origin(t, { again: 'honest' });
  const got = await download(t, p, o.port);
  assert.equal(got.code, 0, got.stderr);
  assert.equal(sha(got.body), sha(A));
  assert.equal(o.seen.length, 2);
  const m = /^bytes=(\d+)-(\d+)$/.exec(o.seen[1].range ?? '');
  assert.ok(m, `a Range request: ${o.seen[1].range}`);
  const offset = Number(m[1]);
  assert.ok(offset > 0 && offset <= 1024 * 1024 + 17, `resumed at ${offset}`);
  assert.equal(Number(m[2]), SIZE - 1);
  assert.equal(o.seen[1].ifRange, o.etag);
  await flowsDrained(p.hf);
  const resumed = p.logs.byMsg('flow resumed');
  assert.equal(resumed.length, 1);
  assert.equal(resumed[0].offset, offset);
  assert.equal(resumed[0].from, 'lo');
  assert.equal(resumed[0].to, 'lo');
  assert.equal(resumed[0].resumed, 1);
  const close = p.logs.byMsg('flow close');
  assert.equal(close.length, 1, 'one flow, one response');
  assert.equal(close[0].reason, 'done');
  assert.equal(close[0].bytesDown, SIZE);
  assert.deepEqual(forwardOf(p), { resumes: 1, resumeFailures: 0 });
  const metrics = await fetch(`${p.url}/metrics`).then((r) => r.text());
  assert.match(metrics, /^holdfast_forward_resumes_total 1$/m);
  assert.match(metrics, /^holdfast_forward_resume_failures_total 0$/m);
});

test('Last-Modified (no ETag) is the validator: If-Range carries the date, and the download completes', async (t) => {
  const p = await startProxy(t);
  const o = await origin(t, { again: 'honest', validator: 'last-modified' });
  const got = await download(t, p, o.port);
  assert.equal(got.code, 0, got.stderr);
  assert.equal(sha(got.body), sha(A));
  assert.equal(o.seen[1].ifRange, o.lastModified);
  assert.deepEqual(forwardOf(p), { resumes: 1, resumeFailures: 0 });
});

test('a resumed upstream that drops again is resumed again (attempts: 2), at the new offset', async (t) => {
  const p = await startProxy(t);
  const o = await origin(t, { again: 'dies-again' });
  const got = await download(t, p, o.port);
  assert.equal(got.code, 0, got.stderr);
  assert.equal(sha(got.body), sha(A));
  assert.equal(o.seen.length, 3);
  const offsets = o.seen.slice(1).map((s) => Number(/^bytes=(\d+)-/.exec(s.range ?? '')?.[1]));
  assert.ok(offsets[1] > offsets[0], `offsets ${offsets.join(', ')}`);
  await flowsDrained(p.hf);
  assert.deepEqual(p.logs.byMsg('flow resumed').map((l) => l.offset), offsets);
  assert.deepEqual(forwardOf(p), { resumes: 2, resumeFailures: 0 });
});

test('forward.resume.attempts bounds the Range requests: with 1, a second drop cuts the client', async (t) => {
  const p = await startProxy(t, { forward: { resume: { attempts: 1 } } });
  const o = await origin(t, { again: 'dies-again' });
  const got = await download(t, p, o.port);
  assertCutPrefix(got);
  assert.equal(o.seen.length, 2);
  assert.deepEqual(forwardOf(p), { resumes: 1, resumeFailures: 0 });
});

test('forward.resume.attempts: 0 turns resuming off: the client is cut as before, no Range request', async (t) => {
  const p = await startProxy(t, { forward: { resume: { attempts: 0 } } });
  const o = await origin(t, { again: 'honest' });
  const got = await download(t, p, o.port);
  assertCutPrefix(got);
  assert.equal(o.seen.length, 1);
  await flowsDrained(p.hf);
  assert.equal(p.logs.byMsg('flow close')[0].reason, 'upstream error');
  assert.deepEqual(forwardOf(p), { resumes: 0, resumeFailures: 0 });
});

for (const [what, opts] of [
  ['without Accept-Ranges', { again: 'honest', acceptRanges: false }],
  ['with a weak ETag only', { again: 'honest', validator: 'weak' }],
] as const) {
  test(`a response ${what} is not resumed: the client is cut as before`, async (t) => {
    const p = await startProxy(t);
    const o = await origin(t, opts);
    const got = await download(t, p, o.port);
    assertCutPrefix(got);
    assert.equal(o.seen.length, 1, 'no Range request');
    assert.deepEqual(forwardOf(p), { resumes: 0, resumeFailures: 0 });
  });
}

for (const [what, again] of [
  ['a 200 (Range ignored)', 'full'],
  ['a 200 of a changed file (If-Range did not match)', 'changed'],
  ['a 206 of a changed file (another ETag)', 'changed-206'],
  ['a 206 of the wrong range', 'wrong-range'],
] as const) {
  test(`an answer that is ${what} is never spliced in: the client is cut with the first file's bytes only`, async (t) => {
    const p = await startProxy(t);
    const o = await origin(t, { again });
    const got = await download(t, p, o.port);
    assertCutPrefix(got);
    assert.equal(o.seen.length, 2, 'one Range request, then no more');
    await flowsDrained(p.hf);
    const close = p.logs.byMsg('flow close');
    assert.equal(close[0].reason, 'upstream error');
    assert.equal(close[0].code, 'HF_RESUME_REFUSED');
    assert.equal(p.logs.byMsg('flow resume failed').length, 1);
    assert.deepEqual(forwardOf(p), { resumes: 0, resumeFailures: 1 });
    const metrics = await fetch(`${p.url}/metrics`).then((r) => r.text());
    assert.match(metrics, /^holdfast_forward_resume_failures_total 1$/m);
  });
}

test('a resume whose new dial fails cuts the client as before, counted as a failure', async (t) => {
  const p = await startProxy(t);
  const o = await origin(t, { again: 'gone' });
  const got = await download(t, p, o.port);
  assertCutPrefix(got);
  assert.equal(o.seen.length, 1, 'nothing listens for the Range request');
  await flowsDrained(p.hf);
  const close = p.logs.byMsg('flow close');
  assert.equal(close[0].reason, 'upstream error');
  assert.equal(close[0].code, 'HF_REFUSED');
  assert.deepEqual(forwardOf(p), { resumes: 0, resumeFailures: 1 });
});

test('forward.resume.attempts reloads (SIGHUP): 0 then 2, and the next download is resumed', async (t) => {
  const p = await startProxy(t, { forward: { resume: { attempts: 0 } } });
  const o = await origin(t, { again: 'honest' });
  assertCutPrefix(await download(t, p, o.port));
  assert.equal(o.seen.length, 1);
  await p.hf.reload(parseConfig({ listen: [`127.0.0.1:${p.port}`], log: { level: 'debug' }, forward: { resume: { attempts: 2 } } }, 'test'));
  const got = await download(t, p, o.port);
  assert.equal(got.code, 0, got.stderr);
  assert.equal(sha(got.body), sha(A));
  assert.equal(o.seen.length, 3, 'the second download was resumed by a Range request');
  assert.deepEqual(forwardOf(p), { resumes: 1, resumeFailures: 0 });
});
