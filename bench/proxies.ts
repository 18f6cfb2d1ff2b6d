// The proxies under test: how to find (or install) each, write its config into the temp dir,
// start it on a free loopback port, and what it speaks.
import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { once } from 'node:events';
import { logTail, startProcess, stopProcess, waitListening, type Managed } from './procs.js';

export type ProxyName = 'dante' | 'microsocks' | 'tinyproxy' | 'holdfast' | 'holdfast-base' | 'node-floor';

export interface Speaks {
  socks5: boolean;
  connect: boolean;
  forward: boolean;
}

export interface Running {
  name: ProxyName;
  port: number;
  proc: Managed;
  speaks: Speaks;
  version: string;
  /** the CPUs it may run on (`--split-cpus`), else anywhere */
  cpus?: string;
}

export interface Skipped {
  name: ProxyName;
  why: string;
}

interface Spec {
  name: ProxyName;
  speaks: Speaks;
  /** Debian package and binary, for the peers apt can provide. */
  apt?: { pkg: string; bin: string };
  /** The command line, after writing any config into dir. */
  argv(dir: string, port: number, bin: string): string[];
  version(bin: string): string;
  /** Why it cannot run, checked before start (besides a missing binary). */
  unavailable?(): string | undefined;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

function which(bin: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':')]) {
    const p = join(dir, bin);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
}

const cores = availableParallelism();

const SPECS: Spec[] = [
  {
    name: 'dante',
    speaks: { socks5: true, connect: false, forward: false },
    apt: { pkg: 'dante-server', bin: 'danted' },
    argv(dir, port, bin) {
      const conf = join(dir, 'danted.conf');
      writeFileSync(
        conf,
        [
          'logoutput: stderr',
          `internal: 127.0.0.1 port = ${port}`,
          'external: 127.0.0.1',
          'clientmethod: none',
          'socksmethod: none',
          'user.privileged: root',
          'user.unprivileged: nobody',
          'timeout.negotiate: 30',
          'timeout.io: 0',
          'client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }',
          'socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }',
          '',
        ].join('\n'),
      );
      // -N: one "mother" per core (the manpage: more than the CPUs will not help). Dante forks
      // negotiate/request/io children on demand under each mother, so concurrency is not capped here.
      return [bin, '-f', conf, '-N', String(cores), '-p', join(dir, 'danted.pid')];
    },
    version: (bin) => firstLine(bin, ['-v']).replace(/\.\s+Copyright.*/, ''),
    unavailable: () => (process.getuid?.() === 0 ? undefined : 'danted needs root here (user.privileged: root)'),
  },
  {
    name: 'microsocks',
    speaks: { socks5: true, connect: false, forward: false },
    apt: { pkg: 'microsocks', bin: 'microsocks' },
    argv: (_dir, port, bin) => [bin, '-i', '127.0.0.1', '-p', String(port)],
    version: () => {
      try {
        return `microsocks ${execFileSync('dpkg-query', ['-W', '-f=${Version}', 'microsocks'], { encoding: 'utf8' })}`;
      } catch {
        return 'microsocks';
      }
    },
  },
  {
    name: 'tinyproxy',
    speaks: { socks5: false, connect: true, forward: true },
    apt: { pkg: 'tinyproxy', bin: 'tinyproxy' },
    argv(dir, port, bin) {
      const conf = join(dir, 'tinyproxy.conf');
      const root = process.getuid?.() === 0;
      writeFileSync(
        conf,
        [
          ...(root ? ['User nobody', 'Group nogroup'] : []),
          `Port ${port}`,
          'Listen 127.0.0.1',
          'Timeout 600',
          'LogLevel Error',
          // One thread per client in 1.11: room for the 10,000-tunnel scenario.
          'MaxClients 12000',
          'Allow 127.0.0.1',
          'DisableViaHeader Yes',
          '',
        ].join('\n'),
      );
      return [bin, '-d', '-c', conf];
    },
    version: (bin) => firstLine(bin, ['-v']),
  },
  {
    name: 'node-floor',
    speaks: { socks5: true, connect: true, forward: false },
    argv: (_dir, port) => [process.execPath, new URL('./floor-relay.js', import.meta.url).pathname, String(port)],
    version: () => `node ${process.version} net.connect + a four-listener relay`,
  },
  holdfastSpec('holdfast', holdfastCli),
  // another build of holdfast (HOLDFAST_BENCH_BASE=/path/to/dist/src/cli.js, e.g. a worktree of
  // the commit before a change), measured in the same rounds: a before/after on the same machine
  holdfastSpec('holdfast-base', () => process.env.HOLDFAST_BENCH_BASE ?? ''),
];

function holdfastSpec(name: 'holdfast' | 'holdfast-base', cli: () => string): Spec {
  return {
    name,
    speaks: { socks5: true, connect: true, forward: true },
    // HOLDFAST_BENCH_MPTCP=1: upstream sockets as MPTCP (the bench's servers are TCP: the fallback
    // path, what most servers give). Run inside `unshare -n` so no MPTCP endpoint is touched.
    // HOLDFAST_BENCH_NODE_ARGS: extra node flags, split on spaces (profiling: `--cpu-prof
    // --cpu-prof-dir=/tmp/prof`; the profile is written when the bench stops holdfast);
    // HOLDFAST_BENCH_BASE_NODE_ARGS instead for holdfast-base, when set (a flag's own A/B)
    argv: (_dir, port) => [
      process.execPath,
      ...((name === 'holdfast-base' ? process.env.HOLDFAST_BENCH_BASE_NODE_ARGS : undefined) ?? process.env.HOLDFAST_BENCH_NODE_ARGS ?? '')
        .split(' ')
        .filter(Boolean),
      cli(),
      'start',
      '--listen',
      `127.0.0.1:${port}`,
      '--log-level',
      'warn',
      ...(process.env.HOLDFAST_BENCH_MPTCP === '1' ? ['--mptcp'] : []),
    ],
    version: () => `${name} ${cli()} (node ${process.version})`,
    unavailable: () =>
      cli() === '' ? 'HOLDFAST_BENCH_BASE is not set' : existsSync(cli()) ? undefined : `${cli()} not built yet`,
  };
}

function holdfastCli(): string {
  return new URL('../src/cli.js', import.meta.url).pathname;
}

/** Install missing Debian peers when root (apt-get, bounded); otherwise say why not. */
function ensureBinary(spec: Spec, log: (s: string) => void): string | Skipped {
  if (spec.apt === undefined) return '';
  const found = which(spec.apt.bin);
  if (found !== undefined) return found;
  if (process.getuid?.() !== 0) return { name: spec.name, why: `${spec.apt.bin} missing and not root (apt-get install ${spec.apt.pkg})` };
  log(`installing ${spec.apt.pkg} (apt-get install -y) ...`);
  const r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', spec.apt.pkg], {
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  const again = which(spec.apt.bin);
  if (again !== undefined) return again;
  const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-2).join(' / ');
  return { name: spec.name, why: `apt-get install ${spec.apt.pkg} failed (${r.error?.message ?? `exit ${r.status}`}): ${tail}` };
}

/** Start one proxy from its spec on a free port; a reason instead if it cannot run. */
async function startSpec(dir: string, spec: Spec, log: (s: string) => void, tag = '', cpus?: string): Promise<Running | Skipped> {
  const bin = ensureBinary(spec, log);
  if (typeof bin !== 'string') return bin;
  const why = spec.unavailable?.();
  if (why !== undefined) return { name: spec.name, why };
  const port = await freePort();
  const proc = startProcess(spec.name, spec.argv(dir, port, bin), {
    logPath: join(dir, `${spec.name}${tag}.log`),
    env: { ...process.env, TMPDIR: dir },
    cpus,
  });
  try {
    await waitListening(proc, port);
    return { name: spec.name, port, proc, speaks: spec.speaks, version: spec.version(bin), cpus };
  } catch (e) {
    await stopProcess(proc);
    return { name: spec.name, why: (e as Error).message.split('\n').slice(0, 3).join(' / ') };
  }
}

export async function startProxies(
  dir: string,
  wanted: ReadonlySet<ProxyName>,
  log: (s: string) => void,
  cpus?: string,
): Promise<{ running: Running[]; skipped: Skipped[] }> {
  const running: Running[] = [];
  const skipped: Skipped[] = [];
  for (const spec of SPECS) {
    if (!wanted.has(spec.name)) continue;
    const r = await startSpec(dir, spec, log, '', cpus);
    if ('why' in r) skipped.push(r);
    else running.push(r);
  }
  return { running, skipped };
}

let freshCount = 0;

/**
 * A new instance of a running proxy (same config, new port, own log), for measurements that
 * must not inherit what earlier scenarios left in the heap. The caller stops it.
 */
export async function startFresh(dir: string, p: Running, log: (s: string) => void): Promise<Running> {
  const spec = SPECS.find((s) => s.name === p.name);
  if (spec === undefined) throw new Error(`no spec for ${p.name}`);
  const r = await startSpec(dir, spec, log, `.fresh${++freshCount}`, p.cpus);
  if ('why' in r) throw new Error(`${p.name}: a fresh instance did not start: ${r.why}`);
  return r;
}

/** Still alive? A proxy that died mid-bench makes its later rows fail loudly, not quietly. */
export function assertAlive(p: Running): void {
  if (p.proc.exitedAlready) throw new Error(`${p.name} has exited (${p.proc.exitHow}); log ${p.proc.logPath}:\n${logTail(p.proc)}`);
}
