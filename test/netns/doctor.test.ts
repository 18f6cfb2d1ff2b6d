// `holdfast doctor` in the KERNEL-NOTES lab's host namespace: strict rp_filter (all, or one
// interface) is reported as a failure with the sysctl that fixes it, and exit 1; loose passes with
// exit 0; with `holdfast start --policy-routing` running, the same strict host can hold sessions
// (policy routing covers if1; exit 0). The interfaces, default route and listener are reported.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { ADDR, type Lab } from '../helpers/lab.js';
import { CLI, createLab, holdfastLabOptions, PROXY_PORT } from '../helpers/lab-extras.js';

interface Check {
  id: string;
  status: 'ok' | 'info' | 'warn' | 'fail';
  summary: string;
  fix?: string;
}
interface Report {
  canHoldSessions: boolean;
  checks: Check[];
}

async function doctor(lab: Lab): Promise<{ code: number | null; report: Report; text: string }> {
  const args = [CLI, 'doctor', '--listen', `127.0.0.1:${PROXY_PORT}`, '--no-system-proxy'];
  const j = await lab.exec('host', process.execPath, [...args, '--json'], { allowFail: true, timeoutMs: 20_000 });
  const txt = await lab.exec('host', process.execPath, args, { allowFail: true, timeoutMs: 20_000 });
  assert.equal(txt.code, j.code, 'text and JSON runs agree on the exit status');
  return { code: j.code, report: JSON.parse(j.stdout) as Report, text: txt.stdout };
}

const check = (r: Report, id: string): Check => {
  const c = r.checks.find((x) => x.id === id);
  assert.ok(c, `a ${id} check: ${JSON.stringify(r.checks.map((x) => x.id))}`);
  return c;
};

async function sysctl(lab: Lab, ...settings: string[]): Promise<void> {
  await lab.exec('host', 'sysctl', ['-q', ...settings.flatMap((s) => ['-w', s])]);
}

test('doctor: strict rp_filter is a failure with its fix; loose passes; interfaces, route and listener reported', holdfastLabOptions(60_000), async (t: TestContext) => {
  const lab = await createLab(t, { ipv6: true });

  // the lab's default: loose (2) everywhere
  const loose = await doctor(lab);
  t.diagnostic(`loose:\n${loose.text}`);
  assert.equal(loose.code, 0, loose.text);
  assert.equal(loose.report.canHoldSessions, true);
  assert.equal(check(loose.report, 'rp_filter').status, 'ok');
  assert.equal(check(loose.report, 'binding').status, 'ok');
  assert.match(check(loose.report, 'binding').summary, /bound to if1/);
  const if1 = check(loose.report, 'interface:if1');
  assert.match(if1.summary, new RegExp(`${ADDR.host.if1.v4.replaceAll('.', '\\.')}/24`));
  assert.match(if1.summary, new RegExp(`IPv4 default via ${ADDR.r1.host.v4.replaceAll('.', '\\.')} metric 100 \\(best\\)`));
  assert.equal(check(loose.report, 'routes').status, 'ok');
  assert.equal(check(loose.report, `listener:127.0.0.1:${PROXY_PORT}`).status, 'warn', 'nothing listens yet');
  assert.equal(check(loose.report, 'policy-routing').status, 'info');

  // all=1 with if1=2: the kernel uses the larger value, so if1 is still loose
  await sysctl(lab, 'net.ipv4.conf.all.rp_filter=1');
  const allOnly = await doctor(lab);
  assert.equal(allOnly.code, 0, allOnly.text);
  assert.match(check(allOnly.report, 'rp_filter').summary, /all=1, default=2; effective: if1=2 \(loose\)/);

  // all=1 and if1=1: strict
  await sysctl(lab, 'net.ipv4.conf.if1.rp_filter=1');
  const strict = await doctor(lab);
  t.diagnostic(`all=1, if1=1:\n${strict.text}`);
  assert.equal(strict.code, 1);
  assert.equal(strict.report.canHoldSessions, false);
  const rp = check(strict.report, 'rp_filter');
  assert.equal(rp.status, 'fail');
  assert.match(rp.summary, /^strict reverse-path filtering \(rp_filter=1\) on if1: .*effective: if1=1 \(strict\)/);
  assert.match(rp.fix ?? '', /^sudo sysctl -w net\.ipv4\.conf\.all\.rp_filter=2 .*holdfast start --policy-routing/);
  assert.match(strict.text, /^\[fail\] rp_filter: .*\n {7}fix: sudo sysctl -w net\.ipv4\.conf\.all\.rp_filter=2/m);
  assert.match(strict.text, /cannot hold sessions on this host yet/);

  // all=0 and if1=1: strict too
  await sysctl(lab, 'net.ipv4.conf.all.rp_filter=0');
  assert.equal(check((await doctor(lab)).report, 'rp_filter').status, 'fail');

  // the fix as printed (all=2; if1 stays 1) makes the host pass
  await sysctl(lab, 'net.ipv4.conf.all.rp_filter=2');
  const fixed = await doctor(lab);
  assert.equal(fixed.code, 0, fixed.text);
  assert.match(check(fixed.report, 'rp_filter').summary, /effective: if1=2 \(loose\)/);

  // without the addon, device binding is missing: a failure with its fix
  const noAddon = await lab.exec('host', 'env', ['HOLDFAST_NO_ADDON=1', process.execPath, CLI, 'doctor', '--json', '--no-system-proxy'], { allowFail: true, timeoutMs: 20_000 });
  assert.equal(noAddon.code, 1);
  const addon = check(JSON.parse(noAddon.stdout) as Report, 'addon');
  assert.equal(addon.status, 'fail');
  assert.match(addon.fix ?? '', /npm rebuild holdfast/);
});

test('doctor: with holdfast --policy-routing running, a strict host can hold sessions', holdfastLabOptions(60_000), async (t: TestContext) => {
  const lab = await createLab(t, { ipv6: true });
  await sysctl(lab, 'net.ipv4.conf.all.rp_filter=1', 'net.ipv4.conf.if1.rp_filter=1');
  const hf = lab.spawn('host', [process.execPath, CLI, 'start', '--listen', `127.0.0.1:${PROXY_PORT}`, '--policy-routing']);
  t.after(() => hf.kill());
  await hf.waitForLine((l) => l.includes('"msg":"policy routing"'), 10_000, 'holdfast "policy routing"');
  const d = await doctor(lab);
  t.diagnostic(`strict + --policy-routing:\n${d.text}`);
  assert.equal(d.code, 0, d.text);
  const pr = check(d.report, 'policy-routing');
  assert.equal(pr.status, 'ok');
  assert.match(pr.summary, new RegExp(`covers if1 \\(added by holdfast --policy-routing\\): from ${ADDR.host.if1.v4.replaceAll('.', '\\.')} lookup \\d+`));
  assert.equal(check(d.report, 'rp_filter').status, 'ok');
  assert.match(check(d.report, 'rp_filter').summary, /rp_filter strict on if1, but source policy routing covers it/);
  const listener = check(d.report, `listener:127.0.0.1:${PROXY_PORT}`);
  assert.equal(listener.status, 'ok');
  assert.match(listener.summary, /holdfast answers at 127\.0\.0\.1:1080 \(0 live flows, binder device\)/);

  // and once it has exited (rules removed), the host is strict and uncovered again
  await hf.kill(5000);
  const after = await doctor(lab);
  assert.equal(after.code, 1);
  assert.equal(check(after.report, 'rp_filter').status, 'fail');
});
