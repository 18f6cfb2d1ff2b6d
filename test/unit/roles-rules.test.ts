// Issue 15: the pure parts of roles and destination rules: globs, where a role comes from
// (interface name or glob, metered, type, default), tiers, the order inside the best tier,
// rule entries (to, ports, via), first match, and config errors that name the key.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config.js';
import type { NetInterface } from '../../src/contracts.js';
import { bestTier, globMatch, orderCandidates, placementOf, tierOf, type RoleSettings } from '../../src/egress/roles.js';
import { compileRules, firstMatch, parsePortEntry, parseToEntry, parseViaEntry, viaIndex } from '../../src/egress/rules.js';
import { iface } from '../helpers/fakes.js';

const none: RoleSettings = { interfaces: {}, types: {}, metered: {} };

test('15: globs match interface names shell-style; a plain name matches only itself', () => {
  assert.ok(globMatch('wwan*', 'wwan0'));
  assert.ok(globMatch('usb?', 'usb1'));
  assert.ok(globMatch('en[ox]*', 'enx0a1b'));
  assert.ok(globMatch('eth[!0]', 'eth1'));
  assert.ok(!globMatch('eth[!0]', 'eth0'));
  assert.ok(!globMatch('wwan*', 'xwwan0'));
  assert.ok(!globMatch('usb?', 'usb10'));
  assert.ok(globMatch('eth0', 'eth0'));
  assert.ok(!globMatch('eth0', 'eth01'));
  assert.ok(!globMatch('a.b', 'axb'), 'a dot is a dot');
});

test('15: a role comes from the exact name, then the first glob, then metered, then the type, else normal', () => {
  const s: RoleSettings = {
    interfaces: { 'wwan*': { role: 'never' }, wwan0: { role: 'prefer' }, 'usb*': { metered: false }, 'eth*': { metered: true } },
    types: { cellular: { role: 'backup' }, vpn: { role: 'prefer' } },
    metered: { role: 'backup' },
  };
  assert.deepEqual(placementOf('wwan0', 'cellular', undefined, s), { type: 'cellular', metered: null, role: 'prefer', roleBy: 'interface' });
  assert.deepEqual(placementOf('wwan1', 'cellular', true, s), { type: 'cellular', metered: true, role: 'never', roleBy: 'interface' });
  assert.deepEqual(placementOf('wlan0', 'wifi', true, s), { type: 'wifi', metered: true, role: 'backup', roleBy: 'metered' });
  assert.deepEqual(placementOf('wlan0', 'wifi', false, s), { type: 'wifi', metered: false, role: 'normal', roleBy: 'default' });
  // the config's word on metered beats NetworkManager's, both ways
  assert.deepEqual(placementOf('eth0', 'ethernet', false, s), { type: 'ethernet', metered: true, role: 'backup', roleBy: 'metered' });
  assert.deepEqual(placementOf('usb0', 'cellular', true, s), { type: 'cellular', metered: false, role: 'backup', roleBy: 'type' });
  assert.deepEqual(placementOf('wg0', 'vpn', undefined, s), { type: 'vpn', metered: null, role: 'prefer', roleBy: 'type' });
  assert.deepEqual(placementOf('x', 'other', undefined, none), { type: 'other', metered: null, role: 'normal', roleBy: 'default' });
});

test('15: the default config makes cellular and metered interfaces backup', () => {
  const c = parseConfig({});
  const s: RoleSettings = { interfaces: c.interfaces, types: c.types, metered: c.metered };
  assert.equal(placementOf('wwan0', 'cellular', undefined, s).role, 'backup');
  assert.equal(placementOf('wlan0', 'wifi', true, s).role, 'backup');
  assert.equal(placementOf('wlan0', 'wifi', false, s).role, 'normal');
  assert.equal(placementOf('eth0', 'ethernet', undefined, s).role, 'normal');
  // setting another type keeps cellular's default
  const c2 = parseConfig({ types: { vpn: { role: 'prefer' } } });
  assert.deepEqual(c2.types, { cellular: { role: 'backup' }, vpn: { role: 'prefer' } });
});

test('15: tiers: prefer < normal < backup, never and outside via are not allowed; via order comes first', () => {
  assert.deepEqual(['prefer', 'normal', 'backup', 'never'].map((r) => tierOf(r as 'prefer')), [0, 1, 2, undefined]);
  assert.equal(tierOf('normal', -1), undefined);
  assert.ok(tierOf('backup', 0)! < tierOf('prefer', 1)!, 'an earlier via entry beats a better role in a later one');
  assert.deepEqual(bestTier(['a', 'b', 'c', 'd'], (x) => ({ a: 2, b: 1, c: undefined, d: 1 })[x]), ['b', 'd']);
  assert.deepEqual(bestTier(['a'], () => undefined), []);
});

const A = iface('a', { index: 2, addresses: ['10.0.1.2/24'], routes: [{ family: 4, metric: 100 }] });
const B = iface('b', { index: 3, addresses: ['10.0.2.2/24'], routes: [{ family: 4, metric: 50 }] });
const C = iface('c', { index: 4, addresses: ['10.0.3.2/24'], routes: [{ family: 4, metric: 200 }] });
const NOROUTE = iface('n', { index: 5, addresses: ['10.0.4.2/24'] });
const brief = (o: { iface: NetInterface; placedBy: string }[]) => o.map((x) => `${x.iface.name}/${x.placedBy}`);

test("15: the order inside the best tier: affinity, the kernel's choice, the rest by metric; passed over by role or rule", () => {
  const roles: Record<string, 'prefer' | 'normal' | 'backup' | 'never'> = { a: 'normal', b: 'backup', c: 'normal', n: 'normal' };
  const base = { usable: [A, B, C, NOROUTE], family: 4 as const, inBackoff: () => false, tier: (i: NetInterface) => tierOf(roles[i.name]), ruled: false };
  // the kernel picks b (best metric) but b is backup: a and c, by metric, the first placed by role
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: B })), ['a/role', 'c/fallback']);
  // the kernel picks a: it leads; n has no default route and is not the kernel's: left out
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: A })), ['a/route', 'c/fallback']);
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: NOROUTE })), ['n/route', 'a/fallback', 'c/fallback']);
  // affinity inside the tier leads; affinity on the backup is ignored while a normal one is usable
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: A, affinity: C })), ['c/affinity', 'a/fallback']);
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: A, affinity: B })), ['a/route', 'c/fallback']);
  // only the backup is usable: it takes the flow as the kernel's choice
  assert.deepEqual(brief(orderCandidates({ ...base, usable: [B], kernel: B })), ['b/route']);
  // a rule passed the kernel's choice over
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: B, ruled: true, tier: (i) => (i === C ? 0 : undefined) })), ['c/rule']);
  // back-off: the others first; all of the tier in back-off: the kernel's anyway, else the tier's
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: A, inBackoff: (n) => n === 'a' })), ['c/fallback']);
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: A, inBackoff: () => true })), ['a/route']);
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: B, inBackoff: () => true })), ['a/role', 'c/fallback']);
  // every usable interface never: nowhere to go
  assert.deepEqual(brief(orderCandidates({ ...base, kernel: A, tier: () => undefined })), []);
});

test('15: rule entries: addresses, CIDRs, names, *.suffix; ports and ranges; via names, globs and types', () => {
  assert.deepEqual(parseToEntry('10.0.0.0/8'), { kind: 'net', ip: '10.0.0.0', prefix: 8, family: 4 });
  assert.deepEqual(parseToEntry('fd00::1'), { kind: 'net', ip: 'fd00::1', prefix: 128, family: 6 });
  assert.deepEqual(parseToEntry('Git.Corp.Example.'), { kind: 'name', name: 'git.corp.example' });
  assert.deepEqual(parseToEntry('*.corp.example'), { kind: 'suffix', suffix: 'corp.example' });
  for (const bad of ['', '10.0.0.0/33', 'fd00::/129', '*.', '*', 'a..b', 'has space', '10.0.0.0/x']) {
    assert.ok('error' in parseToEntry(bad), `"${bad}" is an error`);
  }
  assert.deepEqual(parsePortEntry(443), [443, 443]);
  assert.deepEqual(parsePortEntry('8000-8100'), [8000, 8100]);
  for (const bad of [0, 65536, '9-1', 'http', -1]) assert.ok('error' in parsePortEntry(bad), `${bad} is an error`);
  assert.deepEqual(parseViaEntry('cellular'), { kind: 'type', type: 'cellular' });
  assert.deepEqual(parseViaEntry('wg*'), { kind: 'name', pattern: 'wg*' });
  assert.ok('error' in parseViaEntry(''));
});

test('15: the first matching rule wins; names as asked, addresses after resolution, ports narrow', () => {
  const rules = compileRules([
    { to: ['*.corp.example', '10.0.0.0/8'], via: 'wg0' },
    { to: 'video.example', ports: [443, '8000-8100'], via: ['ethernet', 'wifi'] },
    { to: ['fd00::/8', 'corp.example'], via: 'vpn' },
  ]);
  const hit = (q: Parameters<typeof firstMatch>[1]) => firstMatch(rules, q)?.index;
  assert.equal(hit({ name: 'git.corp.example', port: 22 }), 0);
  assert.equal(hit({ name: 'GIT.CORP.EXAMPLE.', port: 22 }), 0, 'case and a trailing dot do not matter');
  assert.equal(hit({ name: 'corp.example', port: 443 }), 2, '*.suffix is below the suffix only');
  assert.equal(hit({ name: 'notcorp.example', port: 443 }), undefined);
  assert.equal(hit({ ip: '10.20.30.40', port: 443 }), 0);
  assert.equal(hit({ name: 'public.example', ip: '10.1.1.1', port: 443 }), 0, 'a name resolved into the CIDR matches');
  assert.equal(hit({ ip: '11.0.0.1', port: 443 }), undefined);
  assert.equal(hit({ name: 'video.example', port: 443 }), 1);
  assert.equal(hit({ name: 'video.example', port: 8050 }), 1);
  assert.equal(hit({ name: 'video.example', port: 80 }), undefined, 'outside the ports');
  assert.equal(hit({ ip: 'fd12::1', port: 1 }), 2);
  assert.equal(hit({ port: 443 }), undefined);
  // via: the first entry that admits an interface, by name, glob or type
  assert.equal(viaIndex(rules[1], 'eth0', 'ethernet'), 0);
  assert.equal(viaIndex(rules[1], 'wlan0', 'wifi'), 1);
  assert.equal(viaIndex(rules[1], 'wwan0', 'cellular'), -1);
  assert.equal(viaIndex(rules[0], 'wg0', 'vpn'), 0);
  assert.equal(viaIndex(rules[0], 'wg1', 'vpn'), -1);
});

/** The ConfigError message of parseConfig(raw). */
function configError(raw: unknown): string {
  try {
    parseConfig(raw, 'holdfast.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

test('15: an unknown role or type, and a rule that can never match, are config errors naming the key', () => {
  assert.match(configError({ interfaces: { 'wwan*': { role: 'sometimes' } } }), /interfaces\.wwan\*\.role:/);
  assert.match(configError({ types: { satellite: { role: 'backup' } } }), /types: unknown key\(s\) "satellite"/);
  assert.match(configError({ types: { wifi: { role: 'first' } } }), /types\.wifi\.role:/);
  assert.match(configError({ metered: { role: 'maybe' } }), /metered\.role:/);
  assert.match(configError({ rules: [{ to: [], via: 'wg0' }] }), /rules\.0\.to: an empty list/);
  assert.match(configError({ rules: [{ to: 'a.example', via: 'wg0' }, { to: ['10.0.0.0/8', '10.0.0.0/40'], via: 'wg0' }] }), /rules\.1\.to\.1: "10\.0\.0\.0\/40"/);
  assert.match(configError({ rules: [{ to: 'a.example', ports: [], via: 'wg0' }] }), /rules\.0\.ports: an empty list/);
  assert.match(configError({ rules: [{ to: 'a.example', ports: '9-1', via: 'wg0' }] }), /rules\.0\.ports: "9-1"/);
  assert.match(configError({ rules: [{ to: 'a.example', via: [] }] }), /rules\.0\.via: an empty list/);
  assert.match(configError({ rules: [{ to: 'a.example' }] }), /rules\.0\.via:/);
  assert.match(configError({ rules: [{ to: 'a.example', via: 'wg0', from: 'x' }] }), /rules\.0: unknown key\(s\) "from"/);
  // unknown interface names are fine: interfaces come and go
  const c = parseConfig({ rules: [{ to: '*.corp.example', via: ['wg-not-here', 'tun*', 'vpn'] }], interfaces: { nothere0: { role: 'never' } } });
  assert.equal(c.rules.length, 1);
  assert.equal(compileRules(c.rules).length, 1);
});
