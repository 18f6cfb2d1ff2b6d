// Issue 15: interface types from fake /sys/class/net trees, NetworkManager's metered state parsed
// from nmcli's output format, and the facts cache (types per ifindex, metered refreshed).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { detectType, InterfaceFactsCache, parseNmcliMetered } from '../../src/net/iftype.js';

interface FakeIf {
  type?: number;
  uevent?: Record<string, string>;
  /** sub-directories or files that exist (wireless, phy80211, tun_flags) */
  has?: string[];
  /** a device directory with this driver (symlink device/driver -> .../drivers/NAME) */
  driver?: string;
  /** a device directory without a driver link */
  device?: boolean;
}

/** A fake /sys/class/net in a temporary directory, removed by t.after. */
function fakeSys(t: TestContext, ifs: Record<string, FakeIf>): string {
  const root = mkdtempSync(join(tmpdir(), `hf${process.pid}-sys-`));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const drivers = join(root, '..', `${root.split('/').pop()}-drivers`);
  t.after(() => rmSync(drivers, { recursive: true, force: true }));
  for (const [name, f] of Object.entries(ifs)) {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'type'), `${f.type ?? 1}\n`);
    const uevent = { INTERFACE: name, IFINDEX: '7', ...(f.uevent ?? {}) };
    writeFileSync(join(dir, 'uevent'), Object.entries(uevent).map(([k, v]) => `${k}=${v}\n`).join(''));
    for (const h of f.has ?? []) {
      if (h === 'tun_flags') writeFileSync(join(dir, h), '0x1002\n');
      else mkdirSync(join(dir, h));
    }
    if (f.driver || f.device) {
      mkdirSync(join(dir, 'device'));
      if (f.driver) {
        mkdirSync(join(drivers, f.driver), { recursive: true });
        symlinkSync(join(drivers, f.driver), join(dir, 'device', 'driver'));
      }
    }
  }
  return root;
}

test('15: types from fake sysfs trees: wifi, cellular, vpn, ethernet, other', (t) => {
  const root = fakeSys(t, {
    wlp2s0: { has: ['wireless', 'phy80211'], device: true, driver: 'iwlwifi' },
    wlan1: { has: ['phy80211'], driver: 'mt7601u' },
    wwan0: { type: 65534, uevent: { DEVTYPE: 'wwan' }, driver: 'qmi_wwan' },
    usb0: { driver: 'rndis_host' },
    enx0a1b: { driver: 'cdc_ether' },
    eth1: { driver: 'ipheth' },
    enp0s31f6: { driver: 'e1000e' },
    enxusbeth: { driver: 'r8152' },
    tun0: { type: 65534, has: ['tun_flags'] },
    tap0: { type: 1, has: ['tun_flags'] },
    wg0: { type: 65534, uevent: { DEVTYPE: 'wireguard' } },
    ppp0: { type: 512 },
    lo: { type: 772 },
    veth0: {},
    br0: { uevent: { DEVTYPE: 'bridge' } },
  });
  const got = Object.fromEntries(
    ['wlp2s0', 'wlan1', 'wwan0', 'usb0', 'enx0a1b', 'eth1', 'enp0s31f6', 'enxusbeth', 'tun0', 'tap0', 'wg0', 'ppp0', 'lo', 'veth0', 'br0', 'gone0'].map(
      (n) => [n, detectType(n, root)],
    ),
  );
  assert.deepEqual(got, {
    wlp2s0: 'wifi',
    wlan1: 'wifi',
    wwan0: 'cellular',
    usb0: 'cellular',
    enx0a1b: 'cellular',
    eth1: 'cellular',
    enp0s31f6: 'ethernet',
    enxusbeth: 'ethernet',
    tun0: 'vpn',
    tap0: 'vpn',
    wg0: 'vpn',
    ppp0: 'vpn',
    lo: 'other',
    veth0: 'other',
    br0: 'other',
    gone0: 'other',
  });
});

// `nmcli -t -f GENERAL.DEVICE,GENERAL.METERED device show` in nmcli's terse multi-line form, with
// the strings nmcli prints for NetworkManager's NMMetered values (yes, no, yes (guessed), no
// (guessed), unknown). Written from nmcli's format, NOT recorded here: this machine has no
// NetworkManager (see the report of issue 15).
const NMCLI_TERSE = [
  'GENERAL.DEVICE:wlp2s0',
  'GENERAL.METERED:no (guessed)',
  '',
  'GENERAL.DEVICE:enx0a1b2c3d4e5f',
  'GENERAL.METERED:yes (guessed)',
  '',
  'GENERAL.DEVICE:wwan0',
  'GENERAL.METERED:yes',
  '',
  'GENERAL.DEVICE:enp0s31f6',
  'GENERAL.METERED:no',
  '',
  'GENERAL.DEVICE:lo',
  'GENERAL.METERED:unknown',
  '',
  'GENERAL.DEVICE:p2p-dev-wlp2s0',
  'GENERAL.METERED:unknown',
  '',
].join('\n');

// the same without -t (aligned columns)
const NMCLI_PRETTY = [
  'GENERAL.DEVICE:                         wlp2s0',
  'GENERAL.METERED:                        no (guessed)',
  '',
  'GENERAL.DEVICE:                         wwan0',
  'GENERAL.METERED:                        yes',
  '',
].join('\n');

test('15: NetworkManager metered parsed from nmcli output (yes, no, guessed; unknown left out)', () => {
  assert.deepEqual(
    [...parseNmcliMetered(NMCLI_TERSE)],
    [
      ['wlp2s0', false],
      ['enx0a1b2c3d4e5f', true],
      ['wwan0', true],
      ['enp0s31f6', false],
    ],
  );
  assert.deepEqual([...parseNmcliMetered(NMCLI_PRETTY)], [['wlp2s0', false], ['wwan0', true]]);
  assert.deepEqual([...parseNmcliMetered('')], []);
  assert.deepEqual([...parseNmcliMetered('Error: NetworkManager is not running.\n')], []);
});

test('15: the facts cache reads a type once per ifindex and takes metered from the last NetworkManager answer', async (t) => {
  const root = fakeSys(t, { wlan0: { has: ['wireless'] } });
  let answers: (Map<string, boolean> | undefined)[] = [new Map([['wlan0', true]]), new Map([['wlan0', false]])];
  let asked = 0;
  const facts = new InterfaceFactsCache({
    root,
    readMetered: async () => {
      asked++;
      return answers.shift();
    },
  });
  assert.equal(facts.typeOf({ name: 'wlan0', index: 3 }), 'wifi');
  // the tree changes (a different device took the name); the same ifindex keeps its cached type
  rmSync(join(root, 'wlan0', 'wireless'), { recursive: true });
  assert.equal(facts.typeOf({ name: 'wlan0', index: 3 }), 'wifi');
  assert.equal(facts.typeOf({ name: 'wlan0', index: 9 }), 'other', 'a new ifindex is read again');

  assert.equal(facts.nmMetered('wlan0'), undefined, 'nothing known before NetworkManager answers');
  await facts.refresh();
  assert.equal(facts.nmMetered('wlan0'), true);
  await facts.refresh();
  assert.equal(facts.nmMetered('wlan0'), false);
  assert.equal(asked, 2);
  // NetworkManager stops answering (a timeout): the last answer stays
  answers = [undefined];
  await facts.refresh();
  assert.equal(facts.nmMetered('wlan0'), false);
});

test('15: without nmcli the facts cache stops asking; NetworkManager not running yet is asked again', async () => {
  let asked = 0;
  const noNmcli = new InterfaceFactsCache({
    root: '/nonexistent',
    readMetered: async () => {
      asked++;
      return null;
    },
  });
  await noNmcli.refresh();
  await noNmcli.refresh();
  assert.equal(asked, 1);
  assert.equal(noNmcli.nmMetered('eth0'), undefined);

  // NetworkManager starts after holdfast (boot order): the first ask fails, a later one answers
  const answers: (Map<string, boolean> | undefined)[] = [undefined, new Map([['eth0', true]])];
  const late = new InterfaceFactsCache({ root: '/nonexistent', readMetered: async () => answers.shift() });
  await late.refresh();
  assert.equal(late.nmMetered('eth0'), undefined);
  await late.refresh();
  assert.equal(late.nmMetered('eth0'), true);
});

test('15: readNmMetered says null where there is no nmcli, so nobody asks again', async () => {
  const { readNmMetered } = await import('../../src/net/iftype.js');
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    assert.equal(await readNmMetered(), null);
  } finally {
    process.env.PATH = path;
  }
});

test('15: a role book follows NetworkManager\'s new answers and a reload, though it caches placements', async () => {
  const { RoleBook } = await import('../../src/egress/roles.js');
  const answers = [new Map([['wlan0', false]]), new Map([['wlan0', true]])];
  const facts = new InterfaceFactsCache({ root: '/nonexistent', readMetered: async () => answers.shift() });
  const book = new RoleBook({ interfaces: {}, types: {}, metered: { role: 'backup' } }, facts);
  const wlan0 = { name: 'wlan0', index: 3 };
  await facts.refresh();
  assert.equal(book.placementOf(wlan0).role, 'normal');
  await facts.refresh(); // the hotspot is metered now
  assert.deepEqual(book.placementOf(wlan0), { type: 'other', metered: true, role: 'backup', roleBy: 'metered' });
  book.configure({ interfaces: { 'wl*': { role: 'prefer' } }, types: {}, metered: { role: 'backup' } });
  assert.equal(book.placementOf(wlan0).role, 'prefer');
});
