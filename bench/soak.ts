// The soak (issue 7), run by hand, not in CI: many concurrent SOCKS5 tunnels over loopback held
// through holdfast for a long time, each echoing a small message now and then; holdfast's RSS and
// open fds sampled every 10 s. Prints the curve and whether both stayed flat.
//
//   npm run soak                                     10,000 tunnels for 10 minutes
//   npm run build && node dist/bench/soak.js --tunnels 10000 --minutes 2 [--sample 10] [--ping 30]
//
// holdfast runs as the real CLI (`node dist/src/cli.js start`) under `bash -c 'ulimit -n 65536;
// exec ...'`, and so does the echo server (a child of its own); this process, which holds the
// client ends, raises its own limit the same way. holdfast needs two fds per tunnel: where the
// hard limit cannot be raised (no CAP_SYS_RESOURCE), it bounds the tunnel count, and the soak says
// so before it starts. Flat means: from the first sample after every tunnel is open and
// has echoed once, to the last, RSS grew by at most max(10 %, 16 MiB) and fds by at most 1 % (and
// the fd count went back to its start once the tunnels closed). Exit code 0 when flat, 1 if not.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { groupUsage, killAllNow, startProcess, stopProcess, waitListening, NOFILE } from './procs.js';

const { values } = parseArgs({
  options: {
    tunnels: { type: 'string', default: '10000' },
    minutes: { type: 'string', default: '10' },
    sample: { type: 'string', default: '10' },
    ping: { type: 'string', default: '30' },
    concurrency: { type: 'string', default: '200' },
  },
});
const TUNNELS = Number(values.tunnels);
const HOLD_MS = Number(values.minutes) * 60_000;
const SAMPLE_MS = Number(values.sample) * 1000;
const PING_MS = Number(values.ping) * 1000;
const CONCURRENCY = Number(values.concurrency);
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

// ---- our own fd limit: both ends of every tunnel live here --------------------------------------

function softNofile(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  return Number(line?.split(/\s+/)[3] ?? 1024);
}
const needFds = TUNNELS + 500;
if (softNofile() < needFds) {
  if (process.env.HOLDFAST_SOAK_REEXEC) {
    process.stderr.write(`soak: need ${needFds} open files, have ${softNofile()} (ulimit -n could not be raised)\n`);
    process.exit(2);
  }
  const script = `ulimit -n ${NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`;
  const r = spawnSync('bash', ['-c', script, process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, HOLDFAST_SOAK_REEXEC: '1' },
  });
  process.exit(r.status ?? 1);
}

// ---- helpers ------------------------------------------------------------------------------------

const MiB = 1024 * 1024;
const fmtMiB = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
const log = (s: string) => process.stdout.write(`${s}\n`);

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A SOCKS5 CONNECT (no auth), greeting and request in one write; resolves once 05 00 .. arrived. */
function openTunnel(proxyPort: number, echoPort: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: proxyPort });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('no SOCKS reply in 30 s')), 30_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    s.on('error', fail);
    s.on('connect', () => {
      const req = Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 0]);
      req.writeUInt16BE(echoPort, 11);
      s.write(req);
    });
    const onData = (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length < 12) return;
      clearTimeout(timer);
      s.removeListener('data', onData);
      s.removeListener('error', fail);
      if (got[1] !== 0x00 || got[3] !== 0x00) return fail(new Error(`SOCKS refused: ${got.subarray(0, 12).toString('hex')}`));
      resolve(s);
    };
    s.on('data', onData);
  });
}

interface Tunnel {
  socket: Socket;
  pending: string | null;
  closed: boolean;
}

// ---- the run ----------------------------------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), 'hf-soak-'));
process.on('exit', () => {
  killAllNow();
  rmSync(dir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

// holdfast (2 fds a tunnel) must fit under the hard limit its bash can raise the soft one to
const hard = Number(spawnSync('bash', ['-c', `ulimit -n ${NOFILE} 2>/dev/null; ulimit -Hn`], { encoding: 'utf8' }).stdout.trim());
if (Number.isFinite(hard) && hard < 2 * TUNNELS + 100) {
  process.stderr.write(
    `soak: holdfast would need ${2 * TUNNELS + 100} open files for ${TUNNELS} tunnels, but the hard limit here is ${hard} ` +
      `(raising it needs CAP_SYS_RESOURCE); run as root on the host, or use --tunnels ${Math.floor((hard - 100) / 2)}\n`,
  );
  process.exit(2);
}

const echoPort = await freePort();
const echoScript =
  `const net = require('net'); const s = net.createServer((c) => { c.on('error', () => {}); c.pipe(c); });` +
  `s.listen({ port: ${echoPort}, host: '127.0.0.1', backlog: 4096 });`;
const echo = startProcess('echo', [process.execPath, '-e', echoScript], { logPath: join(dir, 'echo.log') });
await waitListening(echo, echoPort);

const proxyPort = await freePort();
const config = join(dir, 'holdfast.yaml');
writeFileSync(config, JSON.stringify({ listen: [`127.0.0.1:${proxyPort}`], log: { level: 'warn' }, limits: { maxFlows: TUNNELS + 1000 } }));
const hf = startProcess('holdfast', [process.execPath, CLI, 'start', '--config', config], { logPath: join(dir, 'holdfast.log') });
await waitListening(hf, proxyPort);
const usage = () => groupUsage(hf.pid);
const base = usage();
log(`soak: ${TUNNELS} SOCKS5 tunnels through holdfast (pid ${hf.pid}) for ${values.minutes} min; a ping per tunnel every ${values.ping} s; samples every ${values.sample} s`);
log(`holdfast at start: RSS ${fmtMiB(base.rss)}, ${base.fds} fds`);

const tunnels: Tunnel[] = [];
let openFailures = 0;
const t0 = Date.now();
let next = 0;
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (next < TUNNELS) {
      next++;
      try {
        const socket = await openTunnel(proxyPort, echoPort);
        const t: Tunnel = { socket, pending: null, closed: false };
        socket.on('error', () => {});
        socket.on('close', () => (t.closed = true));
        socket.on('data', (c: Buffer) => {
          if (t.pending !== null && c.toString() === t.pending) t.pending = null;
        });
        tunnels.push(t);
      } catch {
        openFailures++;
      }
    }
  }),
);
log(`opened ${tunnels.length} tunnels in ${((Date.now() - t0) / 1000).toFixed(1)} s (${openFailures} failed)`);

// pings: each tunnel once per PING_MS, spread evenly; a ping not answered by the next one is lost
let pings = 0;
let lost = 0;
let cursor = 0;
const perTick = Math.max(1, Math.ceil(tunnels.length / (PING_MS / 100)));
const pinger = setInterval(() => {
  for (let i = 0; i < perTick && tunnels.length; i++) {
    const t = tunnels[cursor++ % tunnels.length];
    if (t.closed) continue;
    if (t.pending !== null) lost++;
    t.pending = `p${pings++}`;
    t.socket.write(t.pending);
  }
}, 100);

interface Sample {
  at: number;
  rss: number;
  fds: number;
  live: number;
}
const samples: Sample[] = [];
const take = () => {
  const u = usage();
  const s = { at: Date.now() - t0, rss: u.rss, fds: u.fds, live: tunnels.filter((t) => !t.closed).length };
  samples.push(s);
  log(`  +${String(Math.round(s.at / 1000)).padStart(5)} s  RSS ${fmtMiB(s.rss).padStart(10)}  fds ${String(s.fds).padStart(6)}  tunnels ${s.live}`);
};
take();
// the first full ping round is the warm-up: the reference sample is taken after it
const holdEnd = Date.now() + HOLD_MS;
const warmEnd = Date.now() + Math.min(PING_MS + SAMPLE_MS, HOLD_MS / 2);
let reference: Sample | undefined;
while (Date.now() < holdEnd) {
  await sleep(Math.min(SAMPLE_MS, holdEnd - Date.now()));
  take();
  if (!reference && Date.now() >= warmEnd) reference = samples[samples.length - 1];
  if (hf.exitedAlready) break;
}
clearInterval(pinger);
await sleep(2000); // the last pings' answers
const unanswered = tunnels.filter((t) => t.pending !== null && !t.closed).length;
const dropped = tunnels.filter((t) => t.closed).length;

// close everything; holdfast's fds must go back to where they started
for (const t of tunnels) t.socket.destroy();
let after = usage();
for (let i = 0; i < 100 && after.fds > base.fds + 5; i++) {
  await sleep(100);
  after = usage();
}
const last = samples[samples.length - 1];
const ref = reference ?? samples[Math.min(1, samples.length - 1)];
const rssGrowth = last.rss - ref.rss;
const rssFlat = rssGrowth <= Math.max(0.1 * ref.rss, 16 * MiB);
const fdsFlat = last.fds - ref.fds <= Math.max(0.01 * ref.fds, 10) && after.fds <= base.fds + 5;
const minutes = (last.at - ref.at) / 60_000;
log('');
log(`tunnels: ${tunnels.length} opened, ${dropped} dropped while held, ${pings} pings sent, ${lost + unanswered} unanswered`);
log(`RSS: ${fmtMiB(ref.rss)} after warm-up -> ${fmtMiB(last.rss)} at the end (${rssGrowth >= 0 ? '+' : ''}${fmtMiB(rssGrowth)} over ${minutes.toFixed(1)} min; min ${fmtMiB(Math.min(...samples.map((s) => s.rss)))}, max ${fmtMiB(Math.max(...samples.map((s) => s.rss)))}): ${rssFlat ? 'FLAT' : 'GREW'}`);
log(`fds: ${ref.fds} after warm-up -> ${last.fds} at the end; ${after.fds} after closing every tunnel (${base.fds} at start): ${fdsFlat ? 'FLAT' : 'LEAKED'}`);
const ok = rssFlat && fdsFlat && !hf.exitedAlready && dropped === 0 && lost + unanswered === 0 && openFailures === 0;
log(`soak ${ok ? 'passed' : 'FAILED'}: RSS ${rssFlat ? 'flat' : 'grew'}, fds ${fdsFlat ? 'flat' : 'leaked'}${hf.exitedAlready ? ', holdfast exited' : ''}`);
await stopProcess(hf);
await stopProcess(echo);
process.exit(ok ? 0 : 1);
