// Linux: read interfaces from /sys, addresses from getifaddrs (os.networkInterfaces) and default
// routes from /proc; learn of changes from `ip -o monitor` (netlink), if iproute2 is there.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { DefaultRoute, Family, IfAddress, NetInterface, NetSnapshot } from '../contracts.js';
import type { StateReader } from './monitor.js';

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const RTF_UP = 0x1;
const RTF_REJECT = 0x200;

function readSys(name: string, file: string): string | undefined {
  try {
    return readFileSync(`/sys/class/net/${name}/${file}`, 'latin1').trim();
  } catch {
    return undefined; // e.g. carrier of an interface that is administratively down: EINVAL
  }
}

function hexToIpv4LE(hex: string): string {
  const n = parseInt(hex, 16);
  return `${n & 255}.${(n >>> 8) & 255}.${(n >>> 16) & 255}.${(n >>> 24) & 255}`;
}

function hexToIpv6(hex: string): string {
  const groups: string[] = [];
  for (let i = 0; i < 32; i += 4) groups.push(parseInt(hex.slice(i, i + 4), 16).toString(16));
  // compress the longest run of zero groups
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}

function readDefaultRoutes(): Map<string, DefaultRoute[]> {
  const out = new Map<string, DefaultRoute[]>();
  const add = (ifname: string, r: DefaultRoute) => {
    const list = out.get(ifname);
    if (list) list.push(r);
    else out.set(ifname, [r]);
  };
  try {
    const lines = readFileSync('/proc/net/route', 'latin1').split('\n');
    for (let i = 1; i < lines.length; i++) {
      const f = lines[i].split(/\s+/);
      if (f.length < 8) continue;
      const [iface, dest, gw, flags, , , metric, mask] = f;
      if (dest !== '00000000' || mask !== '00000000') continue;
      if (!(parseInt(flags, 16) & RTF_UP)) continue;
      add(iface, { family: 4, gateway: gw === '00000000' ? null : hexToIpv4LE(gw), metric: Number(metric) });
    }
  } catch {
    /* no IPv4 */
  }
  for (const [iface, r] of ipv6Defaults()) add(iface, r);
  for (const list of out.values()) list.sort((a, b) => a.family - b.family || a.metric - b.metric);
  return out;
}

/** The IPv6 default routes in /proc (every routing table: policy tables show up too). */
function ipv6DefaultsFromProc(text: string): [string, DefaultRoute][] {
  const out: [string, DefaultRoute][] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [dest, plen, , , nexthop, metric, , , flags, iface] = f;
    if (plen !== '00' || !/^0+$/.test(dest)) continue;
    const fl = parseInt(flags, 16);
    if (!(fl & RTF_UP) || fl & RTF_REJECT || iface === 'lo') continue;
    out.push([iface, { family: 6, gateway: /^0+$/.test(nexthop) ? null : hexToIpv6(nexthop), metric: parseInt(metric, 16) }]);
  }
  return out;
}

interface IpRoute {
  dst?: string;
  dev?: string;
  gateway?: string;
  metric?: number;
  type?: string;
  nexthops?: { dev?: string; gateway?: string }[];
}

/** The main table's IPv6 default routes, from `ip -6 -j route show table main default`. */
function ipv6DefaultsFromIp(): [string, DefaultRoute][] {
  const routes = JSON.parse(
    execFileSync('ip', ['-6', '-j', 'route', 'show', 'table', 'main', 'default'], {
      encoding: 'utf8',
      timeout: 2000,
      stdio: ['ignore', 'pipe', 'ignore'],
    }) || '[]',
  ) as IpRoute[];
  const out: [string, DefaultRoute][] = [];
  for (const r of routes) {
    if (r.type && r.type !== 'unicast') continue;
    const metric = r.metric ?? 1024;
    for (const hop of r.nexthops ?? [{ dev: r.dev, gateway: r.gateway }]) {
      if (hop.dev && hop.dev !== 'lo') out.push([hop.dev, { family: 6, gateway: hop.gateway ?? null, metric }]);
    }
  }
  return out;
}

/**
 * IPv6 default routes of the main table. /proc/net/ipv6_route cannot tell tables apart, so its
 * text is only the cheap test for "anything changed?"; on a change, iproute2 is asked which are
 * the main table's (once per change, not once per read). Without iproute2: /proc as it is.
 */
let v6Cache: { key: string; routes: [string, DefaultRoute][] } | undefined;
function ipv6Defaults(): [string, DefaultRoute][] {
  let fromProc: [string, DefaultRoute][];
  try {
    fromProc = ipv6DefaultsFromProc(readFileSync('/proc/net/ipv6_route', 'latin1'));
  } catch {
    return []; // no IPv6
  }
  // the default routes of every table, without the counters that move with traffic
  const key = JSON.stringify(fromProc);
  if (v6Cache?.key === key) return v6Cache.routes;
  let routes: [string, DefaultRoute][];
  try {
    routes = ipv6DefaultsFromIp();
  } catch {
    routes = fromProc;
  }
  v6Cache = { key, routes };
  return routes;
}

/**
 * The flags and carrier files of the non-loopback interfaces, kept open: sysfs answers a read at
 * offset 0 afresh each time, so the close watch's look (every 250 ms while flows live) is two
 * reads per interface instead of a whole re-read (getifaddrs, a directory, three files per
 * interface, two route tables: 1-2 ms on the event loop with a handful of interfaces).
 */
function linkWatcher(): Pick<StateReader, 'linksChanged' | 'close'> {
  const open = new Map<string, { index: number; flags: number; carrier: number }>();
  const buf = Buffer.alloc(64);
  const readAt0 = (fd: number): string | undefined => {
    try {
      return buf.toString('latin1', 0, readSync(fd, buf, 0, buf.length, 0)).trim();
    } catch {
      return undefined; // EINVAL: carrier of a link that is down; ENODEV: the link is gone
    }
  };
  const drop = (name: string) => {
    const h = open.get(name);
    if (!h) return;
    open.delete(name);
    closeSync(h.flags);
    closeSync(h.carrier);
  };
  const handle = (i: NetInterface) => {
    const h = open.get(i.name);
    if (h && h.index === i.index) return h;
    drop(i.name); // a new link under an old name
    let flags: number | undefined;
    try {
      flags = openSync(`/sys/class/net/${i.name}/flags`, 'r');
      const carrier = openSync(`/sys/class/net/${i.name}/carrier`, 'r');
      const made = { index: i.index, flags, carrier };
      open.set(i.name, made);
      return made;
    } catch {
      if (flags !== undefined) closeSync(flags);
      return undefined;
    }
  };
  return {
    linksChanged(snap: NetSnapshot): boolean {
      const seen = new Set<string>();
      let changed = false;
      for (const i of snap.interfaces) {
        if (i.loopback) continue; // nothing to lose
        seen.add(i.name);
        const h = handle(i);
        const flagsText = h && readAt0(h.flags);
        if (flagsText === undefined) {
          drop(i.name);
          changed = true; // gone, or cannot be looked at: the whole read will tell
          continue;
        }
        const up = (parseInt(flagsText, 16) & IFF_UP) !== 0;
        const carrier = up && readAt0(h!.carrier) === '1';
        if (up !== i.up || carrier !== i.carrier) changed = true;
      }
      for (const name of [...open.keys()]) if (!seen.has(name)) drop(name);
      return changed;
    },
    close() {
      for (const name of [...open.keys()]) drop(name);
    },
  };
}

export function createLinuxReader(): StateReader {
  return {
    ...linkWatcher(),
    read(): NetInterface[] {
      const addrs = networkInterfaces();
      const routes = readDefaultRoutes();
      let names: string[];
      try {
        names = readdirSync('/sys/class/net');
      } catch {
        names = Object.keys(addrs);
      }
      const out: NetInterface[] = [];
      for (const name of names) {
        const flags = parseInt(readSys(name, 'flags') ?? '0', 16);
        const loopback = (flags & IFF_LOOPBACK) !== 0;
        const up = (flags & IFF_UP) !== 0;
        const carrier = loopback ? up : up && readSys(name, 'carrier') === '1';
        const addresses: IfAddress[] = [];
        for (const a of addrs[name] ?? []) {
          const family: Family = a.family === 'IPv6' ? 6 : 4;
          const prefixLen = Number((a.cidr ?? '/0').split('/')[1]);
          const ip = family === 6 && a.address.startsWith('fe80:') ? `${a.address}%${name}` : a.address;
          addresses.push({ ip, family, prefixLen });
        }
        addresses.sort((x, y) => x.family - y.family || (x.ip < y.ip ? -1 : x.ip > y.ip ? 1 : 0));
        out.push({
          name,
          index: Number(readSys(name, 'ifindex') ?? 0),
          up,
          carrier,
          loopback,
          addresses,
          defaultRoutes: routes.get(name) ?? [],
        });
      }
      out.sort((a, b) => a.index - b.index);
      return out;
    },
  };
}

/**
 * `ip -o monitor` under a small sh that holds holdfast's end of a pipe on its stdin: when that
 * pipe closes (holdfast stopped the watch, exited, crashed or was SIGKILLed: the kernel closes
 * the pipe whatever way it died) the sh kills `ip` and exits, so no monitor is left behind with
 * parent 1. When `ip` exits by itself, so does the sh (and the watch restarts it). Exit 127: no
 * iproute2.
 */
export const MONITOR_SCRIPT = [
  'command -v ip >/dev/null 2>&1 || exit 127',
  'ip -o monitor link address route rule &',
  'p=$!',
  // the reader gets the pipe through fd 3 (an async list's stdin is /dev/null)
  'exec 3<&0',
  '{ read _ <&3; kill $p 2>/dev/null; } &',
  'r=$!',
  'exec 3<&-',
  'wait $p',
  's=$?',
  'kill $r 2>/dev/null',
  'exit $s',
].join('\n');

/**
 * Watch netlink events through `ip -o monitor link address route rule`; call `poke` on each.
 * `onWatching(true)` once `ip` runs, `(false)` when it stops (events may be missed until it is
 * back). Returns a stop function. Without iproute2, the monitor's poll is the only source.
 */
export function watchLinux(poke: () => void, onWatching: (watching: boolean) => void = () => {}): () => void {
  let stopped = false;
  let child: ReturnType<typeof spawn> | undefined;
  let restart: NodeJS.Timeout | undefined;
  const start = () => {
    if (stopped) return;
    try {
      child = spawn('/bin/sh', ['-c', MONITOR_SCRIPT], {
        stdio: ['pipe', 'pipe', 'ignore'],
      });
    } catch {
      return;
    }
    child.on('error', () => {
      child = undefined; // no iproute2: polling only
      onWatching(false);
    });
    child.on('spawn', () => onWatching(true));
    child.stdout?.on('data', poke);
    child.stdin?.on('error', () => {}); // EPIPE if the sh is already gone
    child.on('exit', (code) => {
      child = undefined;
      onWatching(false);
      if (code === 127) return; // no iproute2: polling only
      if (!stopped) {
        restart = setTimeout(start, 1000);
        restart.unref();
      }
    });
    child.unref();
    (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  };
  start();
  return () => {
    stopped = true;
    if (restart) clearTimeout(restart);
    // closing the pipe is the stop signal: the sh kills `ip`, then exits
    child?.stdin?.destroy();
  };
}
