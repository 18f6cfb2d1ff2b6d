// Issue 3, affinity (DESIGN rule 4), in the netns lab: a passive-mode FTP session through holdfast
// (curl ftp:// via SOCKS5, two files on one control connection) against pyftpdlib, which by
// default refuses a data connection from another address than its control connection's
// (permit_foreign_addresses = False). A better default route via if2 appears after the control
// connection opened, while the first file's data connection runs, before the second file's.
// With affinity the second data connection joins the control connection's interface (if1) and
// both files arrive intact; with `affinity: { mode: off }` it follows the new route to if2, comes
// from net2's address, and pyftpdlib refuses it (425).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { ADDR, NETWORK_OF_PEER } from '../helpers/lab.js';
import {
  createLab,
  holdfastLabOptions,
  sha256,
  startFtpServer,
  startLabHoldfast,
  tempDir,
  withDiagnostics,
  type FtpEvent,
  type LabHoldfast,
  type LogLine,
} from '../helpers/lab-extras.js';
import { pollUntil } from '../helpers/proc.js';

const FTP_HOST = ADDR.server.service.v4[0];
const FTP_PORT = 2121;
const FILE1 = { name: 'first.bin', bytes: 2 * 1024 * 1024 };
const FILE2 = { name: 'second.bin', bytes: 256 * 1024 };
/** the server's pace: the first file takes about 2 s, time enough to change the route during it */
const RATE = 1024 * 1024;

interface Session {
  code: number | null;
  stderr: string;
  got1: Buffer | undefined;
  got2: Buffer | undefined;
  want1: Buffer;
  want2: Buffer;
  events: FtpEvent[];
  opens: LogLine[];
  changedAt: number;
}

async function ftpSession(t: TestContext, mode: 'host' | 'off'): Promise<Session> {
  const lab = await createLab(t, { ipv6: false });
  const root = tempDir(t, 'ftp-root');
  const want1 = randomBytes(FILE1.bytes);
  const want2 = randomBytes(FILE2.bytes);
  writeFileSync(join(root, FILE1.name), want1);
  writeFileSync(join(root, FILE2.name), want2);
  const ftp = await startFtpServer(t, lab, FTP_HOST, FTP_PORT, root, RATE);
  const hf: LabHoldfast = await startLabHoldfast(t, lab, { affinity: { mode, linger: '30s' } });
  const out = tempDir(t, 'ftp-out');
  const out1 = join(out, FILE1.name);
  const out2 = join(out, FILE2.name);

  return withDiagnostics(t, lab, hf, async () => {
    // one curl, two URLs on the same server: one control connection, a passive data connection each
    const curl = lab.spawn('host', [
      'curl', '-sS', '--max-time', '20', '--socks5-hostname', hf.proxy,
      `ftp://${FTP_HOST}:${FTP_PORT}/${FILE1.name}`, '-o', out1,
      `ftp://${FTP_HOST}:${FTP_PORT}/${FILE2.name}`, '-o', out2,
    ]);
    t.after(() => curl.kill());

    // the first file's data connection is up and its transfer has begun, on if1 (the only route)
    const retr1 = await ftp.waitFor((e) => e.event === 'retr' && e.file === FILE1.name, 10_000, `RETR ${FILE1.name}`);
    assert.equal(NETWORK_OF_PEER[retr1.peer ?? ''], 'net1', `control connection came through net1 (peer ${retr1.peer})`);

    const changedAt = await lab.addBetterRouteViaIf2();
    const route = await lab.exec('host', 'ip', ['route', 'get', FTP_HOST]);
    assert.match(route.stdout, /dev if2/, `after the change the kernel routes new flows to the server via if2: ${route.stdout.trim()}`);
    await pollUntil(async () => ((await hf.status()).interfaces.find((i) => i.name === 'if2')?.defaultRoutes?.length ? true : undefined), {
      timeoutMs: 5000,
      intervalMs: 50,
      what: "holdfast's /status showing if2's default route",
    });
    const sentBeforeChange = ftp.events().some((e) => e.event === 'sent' && e.file === FILE1.name);
    assert.equal(sentBeforeChange, false, `the route changed while ${FILE1.name} was still being sent`);
    const dataBeforeChange = ftp.events().filter((e) => e.event === 'data-connection').length;
    assert.equal(dataBeforeChange, 1, 'only the first data connection was opened before the route change');
    assert.equal(curl.running, true, `curl was still fetching ${FILE1.name} when the route changed`);

    const { code } = await curl.exited;
    // the server's last events (a refusal is written after the data socket is closed)
    await ftp.waitFor((e) => (e.event === 'sent' && e.file === FILE2.name) || /^425/.test(e.reply ?? ''), 3000, `${FILE2.name} sent or refused`).catch(() => undefined);
    return {
      code,
      stderr: curl.stderrLines.join('\n'),
      got1: existsSync(out1) ? readFileSync(out1) : undefined,
      got2: existsSync(out2) ? readFileSync(out2) : undefined,
      want1,
      want2,
      events: ftp.events(),
      opens: hf.logs().filter((l) => l.msg === 'flow open'),
      changedAt,
    };
  });
}

function describe(t: TestContext, s: Session, label: string): void {
  const brief = s.events
    .filter((e) => e.event !== 'reply' || /^(1|2[25]|4|5)/.test(e.reply ?? ''))
    .map((e) => `${e.event}${e.file ? ` ${e.file}` : ''}${e.peer ? ` from ${e.peer}` : ''}${e.reply ? `: ${e.reply}` : ''}`);
  t.diagnostic(`${label}: curl exit ${s.code}${s.stderr ? ` (${s.stderr.trim()})` : ''}; ${FILE1.name} ${s.got1?.length ?? 0} B, ${FILE2.name} ${s.got2?.length ?? 0} B`);
  t.diagnostic(`${label}: server: ${brief.join(' | ')}`);
  t.diagnostic(`${label}: holdfast flows: ${s.opens.map((l) => `flow ${String(l.flow)} ${String(l.dst)} via ${String(l.egress)} (${String(l.placedBy)})`).join(', ')}`);
}

const dataConnections = (s: Session) => s.events.filter((e) => e.event === 'data-connection');

test('3: FTP with affinity: the data connection after a better route via if2 joins the control connection on if1; both files intact', holdfastLabOptions(60_000, { python: 'pyftpdlib' }), async (t) => {
  const s = await ftpSession(t, 'host');
  describe(t, s, 'affinity on');
  assert.equal(s.events.filter((e) => e.event === 'connect').length, 1, 'one control connection for both files');
  assert.equal(s.code, 0, `curl exit ${s.code}: ${s.stderr}`);
  assert.ok(s.got1 && sha256(s.got1) === sha256(s.want1), `${FILE1.name} arrived intact (${s.got1?.length} B)`);
  assert.ok(s.got2 && sha256(s.got2) === sha256(s.want2), `${FILE2.name} arrived intact (${s.got2?.length} B)`);
  const data = dataConnections(s);
  assert.equal(data.length, 2, 'two data connections');
  for (const d of data) assert.equal(NETWORK_OF_PEER[d.peer ?? ''], 'net1', `data connection through net1, like its control connection (peer ${d.peer})`);
  assert.equal(s.events.filter((e) => /^425/.test(e.reply ?? '')).length, 0, 'no data connection refused');
  // holdfast: control + 2 data flows on if1; the ones after the first placed by affinity
  assert.equal(s.opens.length, 3, `three flows (control, two data): ${JSON.stringify(s.opens)}`);
  for (const o of s.opens) assert.equal(o.egress, 'if1', `flow #${String(o.flow)} on if1`);
  const last = s.opens[2];
  assert.ok(last.time >= s.changedAt, 'the last data connection began after the route change');
  assert.equal(last.placedBy, 'affinity', 'the data connection after the change was placed by affinity');
});

test('3: FTP without affinity (mode off): the data connection after the change goes via if2 and the server refuses it (425)', holdfastLabOptions(60_000, { python: 'pyftpdlib' }), async (t) => {
  const s = await ftpSession(t, 'off');
  describe(t, s, 'affinity off');
  assert.equal(s.events.filter((e) => e.event === 'connect').length, 1, 'one control connection for both files');
  assert.ok(s.got1 && sha256(s.got1) === sha256(s.want1), `${FILE1.name} (before the change) arrived intact (${s.got1?.length} B)`);
  assert.notEqual(s.code, 0, 'curl failed the second transfer');
  assert.ok(!s.got2 || sha256(s.got2) !== sha256(s.want2), `${FILE2.name} did not arrive`);
  const data = dataConnections(s);
  assert.equal(data.length, 2, 'two data connections reached the server');
  assert.equal(NETWORK_OF_PEER[data[0].peer ?? ''], 'net1', `first data connection through net1 (peer ${data[0].peer})`);
  assert.equal(NETWORK_OF_PEER[data[1].peer ?? ''], 'net2', `second data connection through net2 (peer ${data[1].peer})`);
  const refused = s.events.find((e) => /^425/.test(e.reply ?? ''));
  assert.ok(refused, 'pyftpdlib refused a data connection with 425');
  assert.match(refused.reply ?? '', new RegExp(`foreign address ${ADDR.r2.srv.v4.replace(/\./g, '\\.')}`), 'refused for coming from net2');
  const lastOpen = s.opens.at(-1);
  assert.equal(lastOpen?.egress, 'if2', 'holdfast put the second data connection on if2 (the new route)');
  assert.equal(lastOpen?.placedBy, 'route', 'placed by route');
});
