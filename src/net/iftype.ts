// What kind of network an interface is (wifi, cellular, vpn, ethernet, other) and whether it is
// metered: facts about the host's networks, read from sysfs and NetworkManager. Roles and rules
// (src/egress/roles.ts, rules.ts) use them; nothing here knows of flows.
//
// Type, from /sys/class/net/NAME (a root can be passed, so tests use fake trees):
//   wifi      wireless/ or phy80211 (cfg80211 drivers)
//   cellular  uevent DEVTYPE=wwan, a wwan* name, or a USB tether's driver (cdc_ether, cdc_ncm,
//             cdc_mbim, qmi_wwan, rndis_host, ipheth, ...)
//   vpn       tun/tap (tun_flags), DEVTYPE=wireguard, ARPHRD_PPP (512) or ARPHRD_NONE (65534)
//   ethernet  ARPHRD_ETHER (1) with a device behind it (not a veth, bridge or bond)
//   other     everything else (loopback, veth, bridges, ...)
// Metered, from NetworkManager (`nmcli -t -f GENERAL.DEVICE,GENERAL.METERED device show`), where
// it runs; the config's `interfaces.<name>.metered` is the user's word and wins.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { NetInterface } from '../contracts.js';

export const interfaceTypes = ['wifi', 'cellular', 'vpn', 'ethernet', 'other'] as const;
export type InterfaceType = (typeof interfaceTypes)[number];

export const SYS_CLASS_NET = '/sys/class/net';

/** Drivers of USB tethers and modems (phones over USB, LTE sticks). */
const CELLULAR_DRIVERS = new Set([
  'cdc_ether',
  'cdc_ncm',
  'cdc_mbim',
  'cdc_eem',
  'cdc_subset',
  'huawei_cdc_ncm',
  'qmi_wwan',
  'rndis_host',
  'ipheth',
  'sierra_net',
  'option',
]);

const ARPHRD_ETHER = 1;
const ARPHRD_PPP = 512;
const ARPHRD_NONE = 65534;
const ARPHRD_LOOPBACK = 772;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1').trim();
  } catch {
    return undefined;
  }
}

function ueventOf(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of (read(join(dir, 'uevent')) ?? '').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

function driverOf(dir: string): string | undefined {
  try {
    return basename(readlinkSync(join(dir, 'device', 'driver')));
  } catch {
    return undefined;
  }
}

/** The type of interface `name`, read from `root` (default /sys/class/net). */
export function detectType(name: string, root: string = SYS_CLASS_NET): InterfaceType {
  const dir = join(root, name);
  if (existsSync(join(dir, 'wireless')) || existsSync(join(dir, 'phy80211'))) return 'wifi';
  const uevent = ueventOf(dir);
  const devtype = uevent.get('DEVTYPE');
  if (devtype === 'wlan') return 'wifi';
  if (devtype === 'wwan' || /^wwan\d/.test(name)) return 'cellular';
  const driver = driverOf(dir);
  if (driver && CELLULAR_DRIVERS.has(driver)) return 'cellular';
  if (devtype === 'wireguard' || existsSync(join(dir, 'tun_flags'))) return 'vpn';
  const type = Number(read(join(dir, 'type')) ?? NaN);
  if (type === ARPHRD_PPP || type === ARPHRD_NONE) return 'vpn';
  if (type === ARPHRD_LOOPBACK) return 'other';
  if (type === ARPHRD_ETHER && existsSync(join(dir, 'device')) && !devtype) return 'ethernet';
  return 'other';
}

/**
 * NetworkManager's metered state per device, from `nmcli -t -f GENERAL.DEVICE,GENERAL.METERED
 * device show` (terse or not): "yes" / "yes (guessed)" -> true, "no" / "no (guessed)" -> false,
 * "unknown" -> left out.
 */
export function parseNmcliMetered(text: string): Map<string, boolean> {
  const out = new Map<string, boolean>();
  let device: string | undefined;
  for (const raw of text.split('\n')) {
    const colon = raw.indexOf(':');
    if (colon < 0) continue;
    const key = raw.slice(0, colon).trim();
    const value = raw.slice(colon + 1).trim();
    if (key === 'GENERAL.DEVICE') device = value || undefined;
    else if (key === 'GENERAL.METERED' && device) {
      const v = value.toLowerCase();
      if (v === 'yes' || v.startsWith('yes ')) out.set(device, true);
      else if (v === 'no' || v.startsWith('no ')) out.set(device, false);
      device = undefined;
    }
  }
  return out;
}

/**
 * Ask NetworkManager through nmcli: its answer; undefined when it did not answer (not running
 * yet, a timeout); null when there is no nmcli at all (no point asking again).
 */
export function readNmMetered(timeoutMs = 2000): Promise<Map<string, boolean> | undefined | null> {
  return new Promise((resolve) => {
    try {
      execFile(
        'nmcli',
        ['-t', '-f', 'GENERAL.DEVICE,GENERAL.METERED', 'device', 'show'],
        // untranslated values ("yes (guessed)"), whatever the user's locale
        { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 1 << 20, env: { ...process.env, LC_ALL: 'C' } },
        (err, stdout) => resolve(err ? ((err as NodeJS.ErrnoException).code === 'ENOENT' ? null : undefined) : parseNmcliMetered(stdout)),
      );
    } catch {
      resolve(undefined);
    }
  });
}

function sameMap(a: ReadonlyMap<string, boolean>, b: ReadonlyMap<string, boolean>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** What holdfast knows of an interface beyond the monitor's snapshot. */
export interface InterfaceFacts {
  readonly type: InterfaceType;
  /** true or false when NetworkManager or the config says; null when nobody does */
  readonly metered: boolean | null;
}

export interface FactsOptions {
  /** sysfs root (tests pass a fake tree) */
  readonly root?: string;
  /** NetworkManager's answer (tests pass recorded output); default: nmcli (see readNmMetered) */
  readonly readMetered?: () => Promise<Map<string, boolean> | undefined | null>;
}

/**
 * Types and metered state per interface, cached: a type is read once per (name, ifindex); the
 * metered state is asked of NetworkManager at start, on reload and after each change of the
 * interfaces (`refresh`), in the background, so a lookup never waits.
 */
export class InterfaceFactsCache {
  readonly #root: string;
  readonly #readMetered: () => Promise<Map<string, boolean> | undefined | null>;
  readonly #types = new Map<string, { index: number; type: InterfaceType }>();
  #nm: Map<string, boolean> = new Map();
  #pending: Promise<void> | undefined;
  #again = false;
  #nmAbsent = false;
  #version = 0;

  constructor(opts: FactsOptions = {}) {
    this.#root = opts.root ?? SYS_CLASS_NET;
    this.#readMetered = opts.readMetered ?? (() => readNmMetered());
  }

  typeOf(iface: Pick<NetInterface, 'name' | 'index'>): InterfaceType {
    const hit = this.#types.get(iface.name);
    if (hit && hit.index === iface.index) return hit.type;
    const type = detectType(iface.name, this.#root);
    this.#types.set(iface.name, { index: iface.index, type });
    if (this.#types.size > 4096) this.#types.delete(this.#types.keys().next().value!);
    return type;
  }

  /** Goes up whenever NetworkManager's answer changed (so placements computed from it are stale). */
  get version(): number {
    return this.#version;
  }

  /** NetworkManager's word on `name`, if it gave one. */
  nmMetered(name: string): boolean | undefined {
    return this.#nm.get(name);
  }

  /** Ask NetworkManager again (coalesced); resolves when the answer is in. */
  refresh(): Promise<void> {
    if (this.#nmAbsent) return Promise.resolve();
    if (this.#pending) {
      this.#again = true;
      return this.#pending;
    }
    this.#pending = (async () => {
      do {
        this.#again = false;
        const m = await this.#readMetered();
        if (m === null) {
          // no nmcli: the config alone says, for good
          this.#nmAbsent = true;
          break;
        }
        // no answer (NetworkManager not running yet, a timeout): keep the last, ask next time
        if (m === undefined) break;
        if (!sameMap(this.#nm, m)) this.#version++;
        this.#nm = m;
      } while (this.#again);
    })().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }
}
