// Linux: read interfaces from /sys, addresses from getifaddrs (os.networkInterfaces) and default
// routes from /proc; learn of changes from `ip -o monitor` (netlink), if iproute2 is there.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { DefaultRoute, Family, IfAddress, NetInterface, NetSnapshot } from '../contracts.js';
import type { StateReader } from './monitor.js';

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const RTF_UP = 0x1;
const RTF_REJECT = 0x200;

/**
 * Files of /sys and /proc kept open and read again at offset 0: the kernel answers such a read
 * afresh each time (a sysfs attribute, a seq_file), so a look is one or two preads instead of
 * open, fstat, read, read and close. A kept file whose read fails (its link is gone: ENODEV) is
 * closed and opened again once: the name may be another link's now. A link renamed keeps its
 * files readable, so a new link under its old name would be read through them: the whole read
 * checks each link's directory (`keepLinks`) and lets go of the files of a name that is another
 * link now. The monitor's poll reads about fifteen such files every 2 s; the close watch two per
 * interface every 250 ms.
 */
class KeptFiles {
  readonly #fds = new Map<string, number>();
  /** per link name: the inode of its directory in /sys when its files were kept */
  readonly #links = new Map<string, number>();
  #buf = Buffer.alloc(8192);

  /**
   * The file's text now, or undefined if it cannot be read (e.g. the carrier of a link that is
   * administratively down: EINVAL). `oneRead`: a sysfs attribute, whole in one read.
   */
  read(path: string, oneRead: boolean): string | undefined {
    const kept = this.#fds.get(path);
    if (kept !== undefined) {
      const text = this.#readAll(kept, oneRead);
      if (text !== undefined) return text;
      this.forget(path);
    }
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return undefined;
    }
    const text = this.#readAll(fd, oneRead);
    if (text === undefined) closeSync(fd);
    else this.#fds.set(path, fd);
    return text;
  }

  #readAll(fd: number, oneRead: boolean): string | undefined {
    let n = 0;
    try {
      for (;;) {
        const got = readSync(fd, this.#buf, n, this.#buf.length - n, n);
        n += got;
        if (got === 0 || (oneRead && n < this.#buf.length)) break;
        if (n === this.#buf.length) {
          const bigger = Buffer.alloc(this.#buf.length * 2);
          this.#buf.copy(bigger, 0, 0, n);
          this.#buf = bigger;
        }
      }
    } catch {
      return undefined;
    }
    return this.#buf.toString('latin1', 0, n);
  }

  forget(path: string): void {
    const fd = this.#fds.get(path);
    if (fd === undefined) return;
    this.#fds.delete(path);
    closeSync(fd);
  }

  /**
   * The links there are now (a stat of each one's directory): close the kept files of a link not
   * in `names` (it went away), and of a name whose directory is another link's (renamed, and a
   * new link under the old name).
   */
  keepLinks(names: readonly string[]): void {
    const now = new Map<string, number>();
    for (const name of names) {
      const ino = statSync(`/sys/class/net/${name}`, { throwIfNoEntry: false })?.ino;
      if (ino !== undefined) now.set(name, ino);
    }
    for (const [name, ino] of this.#links) if (now.get(name) !== ino) this.#forgetLink(name);
    for (const [name, ino] of now) this.#links.set(name, ino);
  }

  #forgetLink(name: string): void {
    this.#links.delete(name);
    const dir = `/sys/class/net/${name}/`;
    for (const path of [...this.#fds.keys()]) if (path.startsWith(dir)) this.forget(path);
  }

  close(): void {
    this.#links.clear();
    for (const path of [...this.#fds.keys()]) this.forget(path);
  }
}

/** A link's attribute in /sys/class/net, trimmed. */
function readSys(files: KeptFiles, name: string, file: string): string | undefined {
  return files.read(`/sys/class/net/${name}/${file}`, true)?.trim();
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

function readDefaultRoutes(files: KeptFiles): Map<string, DefaultRoute[]> {
  const out = new Map<string, DefaultRoute[]>();
  const add = (ifname: string, r: DefaultRoute) => {
    const list = out.get(ifname);
    if (list) list.push(r);
    else out.set(ifname, [r]);
  };
  const v4 = files.read('/proc/net/route', false);
  if (v4 !== undefined) {
    const lines = v4.split('\n');
    for (let i = 1; i < lines.length; i++) {
      const f = lines[i].split(/\s+/);
      if (f.length < 8) continue;
      const [iface, dest, gw, flags, , , metric, mask] = f;
      if (dest !== '00000000' || mask !== '00000000') continue;
      if (!(parseInt(flags, 16) & RTF_UP)) continue;
      add(iface, { family: 4, gateway: gw === '00000000' ? null : hexToIpv4LE(gw), metric: Number(metric) });
    }
  } // else no IPv4
  for (const [iface, r] of ipv6Defaults(files)) add(iface, r);
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
function ipv6Defaults(files: KeptFiles): [string, DefaultRoute][] {
  const text = files.read('/proc/net/ipv6_route', false);
  if (text === undefined) return []; // no IPv6
  const fromProc = ipv6DefaultsFromProc(text);
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
 * The close watch's look (every 250 ms while flows live): the flags and carrier files of the
 * non-loopback interfaces, kept open, two reads per interface instead of a whole re-read
 * (getifaddrs, a directory, the files of every link, two route tables).
 */
function linksChanged(files: KeptFiles, snap: NetSnapshot): boolean {
  let changed = false;
  for (const i of snap.interfaces) {
    if (i.loopback) continue; // nothing to lose
    const flagsText = readSys(files, i.name, 'flags');
    if (flagsText === undefined) {
      changed = true; // gone, or cannot be looked at: the whole read will tell
      continue;
    }
    const up = (parseInt(flagsText, 16) & IFF_UP) !== 0;
    const carrier = up && readSys(files, i.name, 'carrier') === '1';
    if (up !== i.up || carrier !== i.carrier) changed = true;
  }
  return changed;
}

export function createLinuxReader(): StateReader {
  const files = new KeptFiles();
  return {
    linksChanged: (snap) => linksChanged(files, snap),
    close: () => files.close(),
    read(): NetInterface[] {
      const addrs = networkInterfaces();
      const routes = readDefaultRoutes(files);
      let names: string[];
      try {
        names = readdirSync('/sys/class/net');
      } catch {
        names = Object.keys(addrs);
      }
      files.keepLinks(names);
      const out: NetInterface[] = [];
      for (const name of names) {
        const flags = parseInt(readSys(files, name, 'flags') ?? '0', 16);
        const loopback = (flags & IFF_LOOPBACK) !== 0;
        const up = (flags & IFF_UP) !== 0;
        const carrier = loopback ? up : up && readSys(files, name, 'carrier') === '1';
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
          index: Number(readSys(files, name, 'ifindex') ?? 0),
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
