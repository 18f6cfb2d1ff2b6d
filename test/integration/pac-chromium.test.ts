// A real browser on holdfast's PAC file: Debian's chromium (headless, driven by playwright-core)
// started with --proxy-pac-url=http://127.0.0.1:PORT/proxy.pac. A page from a test server comes
// through holdfast (its /status shows the flow while the page loads, and the server's peer socket
// belongs to the holdfast process); a host on the bypass list is loaded directly (the peer socket
// belongs to no holdfast, and holdfast opened no flow).
//
// Chromium consults a PAC file only for hosts outside its own implicit bypass rules (localhost,
// 127/8, ::1, link-local): a page on 127.0.0.1 would go direct whatever the PAC says. So both test
// hosts are names for 127.0.0.1: "pac-proxied.test" is resolved by holdfast through a hosts file
// of its own (holdfast runs in a private mount namespace with that file bind-mounted on
// /etc/hosts); "pac-direct.local" (bypassed by the default *.local) is resolved by Chromium itself
// through --host-resolver-rules. Everything stays on loopback in the test namespace; Chromium's
// background networking is off.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Child, deferred, type Deferred } from '../helpers/proc.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { httpServer } from '../helpers/servers.js';
import { quietChromiumArgs } from '../helpers/chromium.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const PROXIED = 'pac-proxied.test';
const DIRECT = 'pac-direct.local';

function skipReason(): string | undefined {
  const sb = sandboxSkip();
  if (sb) return sb;
  const missing = [
    !existsSync(CHROMIUM) && `${CHROMIUM} (apt install chromium)`,
    !existsSync('/usr/bin/unshare') && '/usr/bin/unshare (util-linux)',
    process.getuid?.() !== 0 && 'root (for a private mount namespace)',
  ].filter(Boolean);
  if (!missing.length) return undefined;
  const why = `needs ${missing.join(', ')}`;
  if (process.env.CI === 'true') throw new Error(`CI=true but ${why}`);
  console.log(`# skip: ${why}`);
  return why;
}

/** The pid owning the TCP socket whose local end is 127.0.0.1:port, among `pids`; undefined if none. */
function ownerOf(port: number, pids: readonly number[]): number | undefined {
  const inodes = new Set<string>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      if (parseInt(c[1].split(':')[1], 16) === port) inodes.add(c[9]);
    }
  }
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m && inodes.has(m[1])) return pid;
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return undefined;
}

interface Seen {
  host: string;
  peerPort: number;
  /** the pid that owned the peer socket, checked while the request was open */
  owner: number | undefined;
}

async function startHoldfast(t: TestContext): Promise<{ child: Child; port: number; base: string }> {
  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-pac-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const hosts = join(dir, 'hosts');
  writeFileSync(hosts, `127.0.0.1 localhost\n::1 localhost\n127.0.0.1 ${PROXIED}\n`);
  const child = new Child([
    '/usr/bin/unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    '/bin/sh',
    '-c',
    'mount --bind "$0" /etc/hosts && exec "$@"',
    hosts,
    process.execPath,
    CLI,
    'start',
    '--listen',
    '127.0.0.1:0',
    '--log-level',
    'info',
  ]);
  t.after(() => child.kill());
  const line = await child.waitForLine((l) => l.includes('"msg":"listening"'), 10_000, 'holdfast "listening"');
  const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(line)?.[1]);
  assert.ok(port > 0, `listening line names the port: ${line}`);
  return { child, port, base: `http://127.0.0.1:${port}` };
}

async function statusOf(base: string): Promise<{ flows: Array<{ kind: string; dst: string; egress: string | null }>; totals: { opened: number } }> {
  const r = await fetch(`${base}/status`, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200);
  return (await r.json()) as never;
}

/** Chromium's processes (Debian's /usr/bin/chromium execs /usr/lib/chromium/chromium). */
function chromiumPids(): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv0 = readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0')[0];
      if (argv0 === CHROMIUM || argv0.startsWith('/usr/lib/chromium/')) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

test('chromium with holdfast\'s PAC: a page comes through holdfast, a bypassed host is loaded directly', { skip: skipReason(), timeout: 90_000 }, async (t) => {
  const hf = await startHoldfast(t);

  // the test server: each request is held until the test has looked at it
  const arrived = new Map<string, Deferred<Seen>>();
  const release = new Map<string, Deferred<void>>();
  for (const p of ['/through', '/direct']) {
    arrived.set(p, deferred<Seen>());
    release.set(p, deferred<void>());
  }
  const srv = await httpServer(t, (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '';
    const seen: Seen = { host: req.headers.host ?? '', peerPort: req.socket.remotePort ?? 0, owner: ownerOf(req.socket.remotePort ?? 0, [hf.child.pid]) };
    arrived.get(path)?.resolve(seen);
    void (release.get(path)?.promise ?? Promise.resolve()).then(() => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', connection: 'close' });
      // data: icon: no /favicon.ico request to blur the flow count
      res.end(`<!doctype html><title>${path.slice(1)} ok</title><link rel="icon" href="data:,"><p>${path}</p>`);
    });
  });

  // the PAC holdfast serves is the one `holdfast pac` prints for this listener
  const pacRes = await fetch(`${hf.base}/proxy.pac`, { signal: AbortSignal.timeout(5000) });
  assert.equal(pacRes.status, 200);
  assert.equal(pacRes.headers.get('content-type'), 'application/x-ns-proxy-autoconfig');
  const pacText = await pacRes.text();
  assert.match(pacText, new RegExp(`"PROXY 127\\.0\\.0\\.1:${hf.port}; SOCKS5 127\\.0\\.0\\.1:${hf.port}"`));

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      ...quietChromiumArgs,
      `--proxy-pac-url=${hf.base}/proxy.pac`,
      `--host-resolver-rules=MAP ${DIRECT} 127.0.0.1`,
    ],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();

  // 1. through holdfast
  const before = await statusOf(hf.base);
  const through = page.goto(`http://${PROXIED}:${srv.port}/through`, { timeout: 30_000 });
  const seen1 = await arrived.get('/through')!.promise;
  const st = await statusOf(hf.base);
  const flow = st.flows.find((f) => f.dst === `${PROXIED}:${srv.port}`);
  release.get('/through')!.resolve();
  const resp1 = await through;
  assert.ok(flow, `holdfast's /status lists the page's flow while it loads: ${JSON.stringify(st.flows)}`);
  assert.equal(flow.kind, 'http-forward');
  assert.equal(flow.egress, 'lo');
  assert.equal(seen1.host, `${PROXIED}:${srv.port}`);
  assert.equal(seen1.owner, hf.child.pid, `the server's peer socket (port ${seen1.peerPort}) belongs to holdfast`);
  assert.equal(resp1?.status(), 200);
  assert.equal(await page.title(), 'through ok');
  const open = await hf.child.waitForLine((l) => l.includes('"msg":"flow open"') && l.includes(`${PROXIED}:${srv.port}`), 5000, 'a flow open line');
  assert.match(open, /"egress":"lo"/);
  t.diagnostic(`through holdfast: ${open}`);

  // 2. bypassed (*.local): chromium connects itself
  const opened = (await statusOf(hf.base)).totals.opened;
  const direct = page.goto(`http://${DIRECT}:${srv.port}/direct`, { timeout: 30_000 });
  const seen2 = await arrived.get('/direct')!.promise;
  const owner2 = ownerOf(seen2.peerPort, chromiumPids());
  release.get('/direct')!.resolve();
  const resp2 = await direct;
  assert.equal(resp2?.status(), 200);
  assert.equal(await page.title(), 'direct ok');
  assert.equal(seen2.host, `${DIRECT}:${srv.port}`);
  assert.equal(seen2.owner, undefined, 'the peer socket of the bypassed request is not holdfast\'s');
  assert.ok(owner2 !== undefined, `the peer socket (port ${seen2.peerPort}) belongs to a chromium process`);
  const after = await statusOf(hf.base);
  assert.equal(after.totals.opened, opened, 'holdfast opened no flow for the bypassed host');
  assert.ok(!hf.child.lines.some((l) => l.includes(DIRECT)), 'no holdfast log line names the bypassed host');
  assert.ok(after.totals.opened > before.totals.opened, 'the proxied page was a flow');

  // Chromium sent nothing else through holdfast (no update checks, no background requests)
  const flowLines = hf.child.jsonLines<{ msg: string; flow?: number; dst?: string; code?: string }>().filter((l) => l.flow !== undefined);
  const others = flowLines.filter((l) => (l.msg === 'flow open' && l.dst !== `${PROXIED}:${srv.port}`) || l.code !== undefined);
  assert.deepEqual(others, [], 'every flow holdfast saw went to the test server');
  assert.equal(after.totals.opened, 1, `one flow in all: ${JSON.stringify(flowLines)}`);
});
