// `holdfast doctor` on loopback (the lab runs test/netns/doctor.test.ts): the listener check
// against a running holdfast, against nothing, and against something that is not holdfast; the
// environment variables; JSON and text agree; the exit status follows canHoldSessions.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startProxy } from '../helpers/proxy.js';
import { closedPort, httpServer } from '../helpers/servers.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

interface Check {
  id: string;
  status: string;
  summary: string;
  fix?: string;
}

/** Run doctor (JSON and text) as a child; async, so the servers in this process can answer it. */
async function doctor(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; checks: Check[]; canHold: boolean; text: string }> {
  const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
  const [j, t] = await Promise.all([
    runEnv([CLI, 'doctor', '--json', '--no-system-proxy', ...args], base),
    runEnv([CLI, 'doctor', '--no-system-proxy', ...args], base),
  ]);
  assert.equal(t.code, j.code, 'text and JSON agree on the exit status');
  const report = JSON.parse(j.stdout) as { canHoldSessions: boolean; checks: Check[] };
  return { code: j.code, checks: report.checks, canHold: report.canHoldSessions, text: t.stdout };
}

function runEnv(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const c = execFile(process.execPath, args, { env, encoding: 'utf8', timeout: 20_000 }, (err, stdout) => {
      if (err && typeof (err as { code?: unknown }).code !== 'number') return reject(err);
      resolve({ code: c.exitCode, stdout });
    });
  });
}

const find = (checks: Check[], id: string) => {
  const c = checks.find((x) => x.id === id);
  assert.ok(c, `${id} in ${checks.map((x) => x.id).join(', ')}`);
  return c;
};

test('doctor: holdfast answering at the listener, env pointing at it; exit status follows canHoldSessions', async (t) => {
  const p = await startProxy(t);
  const where = `127.0.0.1:${p.port}`;
  const d = await doctor(['--listen', where], { http_proxy: `http://${where}`, ALL_PROXY: `socks5h://localhost:${p.port}` });
  assert.equal(d.code, d.canHold ? 0 : 1);
  const l = find(d.checks, `listener:${where}`);
  assert.equal(l.status, 'ok');
  assert.match(l.summary, new RegExp(`^holdfast answers at ${where.replaceAll('.', '\\.')} \\(0 live flows, binder (device|source)\\)`));
  const env = find(d.checks, 'env');
  assert.equal(env.status, 'ok');
  assert.equal(env.summary, `http_proxy, ALL_PROXY point at holdfast (${where})`);
  const addon = find(d.checks, 'addon');
  assert.ok(['ok', 'fail'].includes(addon.status));
  if (addon.status === 'ok') assert.equal(find(d.checks, 'binding').status, 'ok', 'device binding was tried and worked');
  for (const c of d.checks) {
    const line = `${`[${c.status}]`.padEnd(7)}${c.id}: ${c.summary}`;
    assert.ok(d.text.includes(line), `text has: ${line}`);
  }
  assert.match(d.text, d.canHold ? /holdfast can hold sessions on this host/ : /cannot hold sessions on this host yet/);
});

test('doctor: nothing at the listener, or something else there, or env pointing elsewhere: warnings with fixes', async (t) => {
  const port = await closedPort();
  const none = await doctor(['--listen', `127.0.0.1:${port}`]);
  const n = find(none.checks, `listener:127.0.0.1:${port}`);
  assert.equal(n.status, 'warn');
  assert.match(n.summary, /nothing listens at .* \(ECONNREFUSED\)/);
  assert.equal(n.fix, `start it: holdfast start --listen 127.0.0.1:${port}`);
  const env = find(none.checks, 'env');
  assert.equal(env.status, 'info');
  assert.match(env.fix ?? '', /eval "\$\(holdfast env\)"/);

  const other = await httpServer(t, (_req, res) => {
    res.writeHead(404);
    res.end('no');
  });
  const o = await doctor(['--listen', `127.0.0.1:${other.port}`], { https_proxy: 'http://corp-proxy.example:3128' });
  const ol = find(o.checks, `listener:127.0.0.1:${other.port}`);
  assert.equal(ol.status, 'warn');
  assert.match(ol.summary, /something that is not holdfast answers .*GET \/status answered 404/);
  const oe = find(o.checks, 'env');
  assert.equal(oe.status, 'warn');
  assert.match(oe.summary, /https_proxy=http:\/\/corp-proxy\.example:3128 point elsewhere than holdfast/);
});

test('doctor without the addon: a failure naming the fix, exit 1 unless policy routing covers every interface', async () => {
  const d = await doctor([], { HOLDFAST_NO_ADDON: '1' });
  const addon = find(d.checks, 'addon');
  assert.match(addon.summary, /native addon not loaded \(disabled by HOLDFAST_NO_ADDON=1\)/);
  assert.match(addon.fix ?? '', /npm rebuild holdfast/);
  assert.equal(d.code, d.canHold ? 0 : 1);
  if (!find(d.checks, 'policy-routing').summary.startsWith('source policy routing covers')) {
    assert.equal(addon.status, 'fail');
    assert.equal(d.code, 1);
  }
});
