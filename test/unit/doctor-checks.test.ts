// Each check of `holdfast doctor` alone, on a fake snapshot and fake readings (the CLI as a whole
// runs in test/integration/doctor.test.ts and, against real sysctls and rules, test/netns/doctor).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  checkAddon,
  checkEnv,
  checkIpv6,
  checkListener,
  checkPolicyRouting,
  checkRoutes,
  checkRpFilter,
  checkSystemProxy,
  hostNet,
  policyCoverage,
} from '../../src/doctor/checks.js';
import type { RuleEntry } from '../../src/doctor/host.js';
import type { AddonState, NativeAddon } from '../../src/native.js';
import type { Backend, CurrentProxy } from '../../src/system/proxy.js';
import { iface, loopback, snapshot } from '../helpers/fakes.js';

const if1 = iface('if1', { index: 2, addresses: ['10.1.1.2/24', 'fe80::1%if1/64'], routes: [{ family: 4, metric: 100, gateway: '10.1.1.1' }] });
const if2 = iface('if2', { index: 3, addresses: ['10.1.2.2/24', 'fd01:2::2/64'], routes: [{ family: 4, metric: 50, gateway: '10.1.2.1' }, { family: 6, metric: 50, gateway: 'fd01:2::1' }] });
const bare = iface('veth9', { index: 4, addresses: ['fe80::9%veth9/64'] });
const two = hostNet(snapshot([loopback(), if1, if2, bare]));
const none = hostNet(snapshot([loopback(), bare]));
const lo = { host: '127.0.0.1', port: 1080 };

function fakeAddon(fail?: (ifname: string) => string | undefined): { state: AddonState; opened: string[]; closed: number[] } {
  const opened: string[] = [];
  const closed: number[] = [];
  const addon = {
    openBound: (_family: 4 | 6, _kind: 0 | 1, ifname: string) => {
      const code = fail?.(ifname);
      if (code) throw Object.assign(new Error(code), { code });
      opened.push(ifname);
      return 100 + opened.length;
    },
    closeFd: (fd: number) => void closed.push(fd),
  } as unknown as NativeAddon;
  return { state: { ok: true, addon }, opened, closed };
}

test('addon: missing is a fail with the fix; loaded binds a socket to each routed interface and closes it', () => {
  const missing = checkAddon({ ok: false, why: 'no compiler' }, two);
  assert.equal(missing.bindingOk, false);
  assert.deepEqual(missing.checks.map((c) => [c.id, c.status]), [['addon', 'fail']]);
  assert.match(missing.checks[0].summary, /no compiler/);
  assert.match(missing.checks[0].fix ?? '', /npm rebuild holdfast/);

  const a = fakeAddon();
  const ok = checkAddon(a.state, two);
  assert.equal(ok.bindingOk, true);
  assert.deepEqual(a.opened, ['if1', 'if2']);
  assert.deepEqual(a.closed, [101, 102], 'every fd it opened is closed');
  assert.deepEqual(ok.checks.map((c) => [c.id, c.status]), [['addon', 'ok'], ['binding', 'ok']]);
  assert.match(ok.checks[1].summary, /bound to if1, if2/);

  // no routed interface: it tries loopback
  const l = fakeAddon();
  assert.equal(checkAddon(l.state, none).bindingOk, true);
  assert.deepEqual(l.opened, ['lo']);
});

test('addon: EPERM on a device names CAP_NET_RAW; another error points at policy routing', () => {
  const eperm = checkAddon(fakeAddon((n) => (n === 'if2' ? 'EPERM' : undefined)).state, two);
  assert.equal(eperm.bindingOk, false);
  assert.equal(eperm.checks[1].status, 'fail');
  assert.match(eperm.checks[1].summary, /if2: EPERM/);
  assert.match(eperm.checks[1].fix ?? '', /cap_net_raw/);
  const other = checkAddon(fakeAddon(() => 'ENODEV').state, two);
  assert.match(other.checks[1].fix ?? '', /--policy-routing/);
});

test('routes: a line per interface, then where new flows go; no default route is a warning', () => {
  const c = checkRoutes(two);
  assert.deepEqual(c.map((x) => x.id), ['interface:if1', 'interface:if2', 'interface:veth9', 'routes']);
  assert.equal(c[1].summary, 'if2: up; 10.1.2.2/24 fd01:2::2/64; IPv4 default via 10.1.2.1 metric 50 (best), IPv6 default via fd01:2::1 metric 50 (best)');
  assert.equal(c[3].status, 'ok');
  assert.equal(c[3].summary, 'default routes via if1, if2; new flows go to if2 (IPv4), if2 (IPv6)');
  const n = checkRoutes(none);
  assert.equal(n.at(-1)?.status, 'warn');
  assert.match(n.at(-1)?.summary ?? '', /no interface has a default route/);
});

const rule = (src: string, table: string, family: 4 | 6 = 4, protocol?: string): RuleEntry => ({ family, src, table, priority: 100, ...(protocol ? { protocol } : {}) });

test('policy routing: covered only where a rule for every address leads to a table routed out of that interface', async () => {
  const tables = new Map([['101', 'if1'], ['102', 'if2'], ['103', 'if1']]);
  const via = async (_f: 4 | 6, table: string, dev: string) => tables.get(table) === dev;
  // if2 has an IPv6 default route too, so its IPv6 address needs a rule as well
  const all = [rule('10.1.1.2', '101', 4, '73'), rule('10.1.2.2', '102', 4, '73'), rule('fd01:2::2', '102', 6, '73')];
  const full = await policyCoverage(two, all, via);
  assert.deepEqual([...full.covered].sort(), ['if1', 'if2']);
  const ok = checkPolicyRouting(two, all, full);
  assert.equal(ok.policyCoversAll, true);
  assert.equal(ok.check.status, 'ok');
  assert.match(ok.check.summary, /\(added by holdfast --policy-routing\): from 10\.1\.1\.2 lookup 101; from 10\.1\.2\.2 lookup 102; from fd01:2::2 lookup 102/);

  const wrongTable = [rule('10.1.1.2', '101'), rule('10.1.2.2', '103')]; // 103 routes out of if1, not if2
  const part = await policyCoverage(two, wrongTable, via);
  assert.deepEqual([...part.covered], ['if1']);
  const warn = checkPolicyRouting(two, wrongTable, part);
  assert.equal(warn.policyCoversAll, false);
  assert.equal(warn.check.status, 'warn');

  const main = [rule('10.1.1.2', 'main')];
  const empty = checkPolicyRouting(two, main, await policyCoverage(two, main, via));
  assert.equal(empty.check.status, 'info');
  assert.match(empty.check.summary, /^no source policy routing/);

  const unread = checkPolicyRouting(two, undefined, await policyCoverage(two, undefined, via));
  assert.match(unread.check.summary, /cannot read routing rules/);
});

const sysctl = (v: Record<string, number>) => (conf: string) => v[conf];

test('rp_filter: strict on a routed interface without policy routing blocks; covered, loose or unreadable does not', () => {
  const strict = checkRpFilter(two, sysctl({ all: 0, default: 0, if1: 1, if2: 2 }), '/proc/sys', new Set(), false);
  assert.equal(strict.strictBlocks, true);
  assert.equal(strict.check.status, 'fail');
  assert.match(strict.check.summary, /rp_filter=1\) on if1:.*all=0, default=0; effective: if1=1 \(strict\), if2=2 \(loose\)/);
  assert.match(strict.check.fix ?? '', /rp_filter=2/);

  const covered = checkRpFilter(two, sysctl({ all: 1, default: 1 }), '/proc/sys', new Set(['if1', 'if2']), true);
  assert.equal(covered.strictBlocks, false);
  assert.equal(covered.check.status, 'ok');
  assert.match(covered.check.summary, /but source policy routing covers it/);

  const loose = checkRpFilter(two, sysctl({ all: 2, default: 0, if1: 1 }), '/proc/sys', new Set(), false);
  assert.equal(loose.check.status, 'ok', 'the kernel takes max(all, iface): 2');
  assert.match(loose.check.summary, /^rp_filter loose or off/);

  const future = checkRpFilter(two, sysctl({ all: 0, default: 1 }), '/proc/sys', new Set(), false);
  assert.equal(future.check.status, 'warn');
  assert.match(future.check.summary, /for new interfaces \(max\(all, default\) = 1\)/);

  const unread = checkRpFilter(two, sysctl({}), '/x', new Set(), false);
  assert.equal(unread.check.status, 'info');
  assert.equal(unread.check.summary, 'cannot read /x/net/ipv4/conf/all/rp_filter (no IPv4?)');
});

test('ipv6: disabled, missing, firewalld strict, or where the global addresses are', () => {
  assert.match(checkIpv6(two, 1, undefined).summary, /disabled/);
  assert.equal(checkIpv6(two, undefined, undefined).summary, 'IPv6 is not available');
  const fw = checkIpv6(two, 0, 'strict');
  assert.equal(fw.status, 'warn');
  assert.match(fw.summary, /IPv6_rpfilter=strict/);
  assert.equal(checkIpv6(two, 0, undefined).summary, 'IPv6 on if2; default route via if2', 'link-local addresses do not count');
  assert.equal(checkIpv6(none, 0, undefined).summary, 'IPv6 enabled, but no interface has a global address');
});

test('listener: holdfast (device or source binder), nothing, or something else', () => {
  const hf = checkListener(lo, { kind: 'holdfast', status: { flows: [{}, {}], binder: 'device' } });
  assert.deepEqual([hf.id, hf.status, hf.summary], ['listener:127.0.0.1:1080', 'ok', 'holdfast answers at 127.0.0.1:1080 (2 live flows, binder device)']);
  const src = checkListener(lo, { kind: 'holdfast', status: { flows: [{}], binder: 'source' } });
  assert.equal(src.status, 'warn');
  assert.match(src.fix ?? '', /npm rebuild holdfast/);
  const nothing = checkListener(lo, { kind: 'none', why: 'ECONNREFUSED' });
  assert.equal(nothing.fix, 'start it: holdfast start --listen 127.0.0.1:1080');
  assert.match(checkListener(lo, { kind: 'other', why: 'GET /status answered 404' }).summary, /not holdfast answers at 127\.0\.0\.1:1080: GET \/status answered 404/);
});

test('env: unset, pointing at holdfast, or elsewhere', () => {
  assert.equal(checkEnv({}, lo).status, 'info');
  const at = checkEnv({ http_proxy: 'http://localhost:1080', all_proxy: 'socks5h://127.0.0.1:1080' }, lo);
  assert.equal(at.status, 'ok');
  assert.match(at.summary, /http_proxy.*all_proxy|all_proxy.*http_proxy/);
  const away = checkEnv({ https_proxy: 'http://10.0.0.1:3128' }, lo);
  assert.equal(away.status, 'warn');
  assert.match(away.summary, /https_proxy=http:\/\/10\.0\.0\.1:3128 point elsewhere/);
});

function backend(current: () => CurrentProxy[], unavailable?: string): Backend {
  return { desktop: 'gnome', unavailable: () => unavailable, save: () => ({}), on: () => [], restore: () => [], current } as Backend;
}
const ctx = { exec: () => ({ status: 0, stdout: '', stderr: '' }), env: {} } as never;

test('system proxy: no desktop, a missing tool, pointing at holdfast, elsewhere, none, or unreadable', () => {
  assert.match(checkSystemProxy(undefined, lo).summary, /no desktop detected/);
  assert.equal(checkSystemProxy({ name: 'gnome', backend: backend(() => [], 'gsettings not found'), ctx }, lo).summary, 'gnome: gsettings not found');
  const at = checkSystemProxy({ name: 'gnome', backend: backend(() => [{ scope: 'gnome', mode: 'manual', http: '127.0.0.1:1080' }]), ctx }, lo);
  assert.equal(at.status, 'ok', at.summary);
  const away = checkSystemProxy({ name: 'gnome', backend: backend(() => [{ scope: 'gnome', mode: 'pac', pacUrl: 'http://wpad/wpad.dat' }]), ctx }, lo);
  assert.equal(away.status, 'warn');
  assert.match(away.summary, /points elsewhere: gnome: pac http:\/\/wpad\/wpad\.dat/);
  assert.equal(checkSystemProxy({ name: 'gnome', backend: backend(() => [{ scope: 'gnome', mode: 'none' }]), ctx }, lo).summary, 'gnome proxy: none');
  const broken = checkSystemProxy({ name: 'gnome', backend: backend(() => { throw new Error('dconf locked'); }), ctx }, lo);
  assert.match(broken.summary, /cannot read the proxy setting: dconf locked/);
});
