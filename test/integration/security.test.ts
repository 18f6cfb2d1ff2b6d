// Issue 11: nothing a local program sends may crash holdfast, loop it into itself, or slip past
// its checks. Each test here failed on the code before the fix (the process died, a loop was
// dialled, a header passed unchanged, a counter was missing).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { createSocket as createUdpSocket } from 'node:dgram';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createDialer } from '../../src/egress/dial.js';
import { trackOwnEnds } from '../../src/egress/own-ends.js';
import { newInboundCounters, type InboundContext } from '../../src/inbound/context.js';
import type { HttpInbound } from '../../src/inbound/http.js';
import { sniff } from '../../src/inbound/listen.js';
import { createAuthenticator } from '../../src/auth.js';
import { startHoldfast } from '../../src/app.js';
import { parseConfig } from '../../src/config.js';
import { flowsDrained, startProxy, type TestProxy } from '../helpers/proxy.js';
import { sandboxSkip, sh } from '../helpers/sandbox.js';
import { Child, run } from '../helpers/proc.js';
import { echoServer, httpServer } from '../helpers/servers.js';
import { readAll, requestBytes, socksRequest } from '../helpers/socks-client.js';
import { frame, socksAssociate, udpEchoBoth, udpSocket, unframe } from '../helpers/udp-echo.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

async function statusOf(p: TestProxy): Promise<Record<string, any>> {
  const res = await fetch(`${p.url}/status`);
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, any>;
}

/** Send raw bytes to the proxy, read until it closes. */
async function rawHttp(p: TestProxy, text: string): Promise<string> {
  const s = connect({ host: p.host, port: p.port });
  s.on('error', () => {});
  await once(s, 'connect');
  s.write(text);
  const out = await readAll(s);
  s.destroy();
  return out.toString('latin1');
}

test('11: a UDP datagram to port 0 (IPv4, IPv6, name) is dropped and counted; the association goes on', async (t) => {
  const p = await startProxy(t);
  const echo = await udpEchoBoth(t);
  const a = await socksAssociate({ host: p.host, port: p.port });
  t.after(() => a.socket.destroy());
  a.socket.on('error', () => {});
  const c = await udpSocket(t);
  for (const host of ['127.0.0.1', '::1', 'localhost']) c.socket.send(frame(host, 0, 'port zero'), a.relay.port, a.relay.host);
  // to an unspecified address: "this host", refused as a loop
  c.socket.send(frame('0.0.0.0', echo.port, 'to myself'), a.relay.port, a.relay.host);
  c.socket.send(frame('127.0.0.1', echo.port, 'after'), a.relay.port, a.relay.host);
  const r = unframe((await c.inbox.next()).msg);
  assert.equal(r.payload.toString(), 'after', 'the association still relays after the bad datagrams');
  const st = await statusOf(p);
  assert.equal(st.socks5.udp.badPort, 3);
  assert.equal(st.socks5.udp.loop, 1);
  assert.equal(echo.v4.seen.filter((s) => s.text !== 'after').length, 0, 'nothing else went out');
});

test('11: SOCKS CONNECT to port 0 is answered 0x01 without a dial', async (t) => {
  const p = await startProxy(t);
  const { socket, reply } = await socksRequest(p.port, 0x01, '127.0.0.1', 0);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x01);
  assert.equal(p.logs.byMsg('flow open').length, 0);
});

test('11: 0.0.0.0, ::, "0" and "0.0.0.0" at holdfast\'s port are refused as a loop (SOCKS 0x02, HTTP 403)', async (t) => {
  const p = await startProxy(t);
  for (const host of ['0.0.0.0', '::', '0', '0:0::0']) {
    const { socket, reply } = await socksRequest(p.port, 0x01, host, p.port);
    socket.destroy();
    assert.equal(reply.rep, 0x02, `SOCKS CONNECT ${host}`);
  }
  for (const target of [`0.0.0.0:${p.port}`, `[::]:${p.port}`, `0:${p.port}`]) {
    const out = await rawHttp(p, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    assert.match(out, /^HTTP\/1\.1 403 /, `HTTP CONNECT ${target}: ${out.slice(0, 60)}`);
  }
  // absolute-form to 0.0.0.0 is a request to holdfast itself: its own page, not a forwarded flow
  const page = await rawHttp(p, `GET http://0.0.0.0:${p.port}/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  assert.match(page, /^HTTP\/1\.1 404 /);
  await flowsDrained(p.hf);
  assert.equal(p.logs.byMsg('flow open').length, 0, 'nothing was dialled');
  const st = await statusOf(p);
  assert.ok(st.refusals.loopRefusals >= 7, `loopRefusals ${st.refusals.loopRefusals}`);
});

test('11: nested CONNECTs to 0.0.0.0 in one write make one flow at most, not a chain', async (t) => {
  const p = await startProxy(t);
  const one = Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), requestBytes(0x01, '0.0.0.0', p.port)]);
  const s = connect({ host: p.host, port: p.port });
  t.after(() => s.destroy());
  s.on('error', () => {});
  await once(s, 'connect');
  s.write(Buffer.concat(Array.from({ length: 200 }, () => one)));
  const out = await readAll(s);
  assert.deepEqual([...out.subarray(0, 4)], [0x05, 0x00, 0x05, 0x02], 'method, then 0x02 for the first request');
  await flowsDrained(p.hf);
  assert.ok(p.hf.flows.size === 0);
  assert.ok(p.logs.byMsg('flow close').length <= 1, `${p.logs.byMsg('flow close').length} flows`);
});

test('11: a client arriving from holdfast\'s own dialer is refused at its first byte', async (t) => {
  const counters = newInboundCounters();
  const log = pino({ level: 'silent' });
  const ctx = {
    log,
    counters,
    handshakeTimeoutMs: 5000,
    auth: createAuthenticator([]),
    allowClient: () => true,
  } as unknown as InboundContext;
  const handled: Socket[] = [];
  const http = { handle: (s: Socket) => handled.push(s) } as unknown as HttpInbound;
  const own = trackOwnEnds();
  // the dialer holdfast runs (source binding: no addon needed), telling own-ends of each socket
  const dialer = createDialer({ timeoutMs: 5000, keepAliveMs: 0 }, undefined, { onDialed: own.record });
  (ctx as { isOwnDial?: unknown }).isOwnDial = own.has;
  const server = createServer((s) => sniff(s, ctx, http));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const egress = { ifname: 'lo', ifindex: 1, source: '127.0.0.1', family: 4 } as never;
  const up = await dialer.dial({ ip: '127.0.0.1', family: 4, port }, egress);
  assert.equal(own.size, 1, 'the dialed socket is recorded before its dial resolves');
  t.after(() => up.destroy());
  up.on('error', () => {});
  up.on('end', () => up.end()); // the dialer's sockets allow half-open: close our side too
  up.write('GET / HTTP/1.1\r\n\r\n');
  await once(up, 'close', { signal: AbortSignal.timeout(5000) });
  assert.equal(counters.loopRefusals, 1);
  assert.equal(handled.length, 0);
  assert.equal(own.size, 0, 'a closed upstream socket is forgotten');
  // a client of its own is served
  const other = connect({ host: '127.0.0.1', port });
  t.after(() => other.destroy());
  await once(other, 'connect');
  other.write('GET / HTTP/1.1\r\n\r\n');
  const deadline = Date.now() + 5000;
  while (handled.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(handled.length, 1);
  assert.equal(counters.loopRefusals, 1);
  for (const h of handled) h.destroy();
});

test('11: the forwarder sets Host from the absolute URL; a duplicate Host is 400; port 0 is 400', async (t) => {
  const p = await startProxy(t);
  const srv = await httpServer(t);
  const out = await rawHttp(
    p,
    `GET http://127.0.0.1:${srv.port}/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`,
  );
  assert.match(out, /^HTTP\/1\.1 200 /);
  assert.equal(srv.seen[0].headers.host, `127.0.0.1:${srv.port}`);
  assert.equal(srv.seen[0].rawHeaders.filter((h) => h.toLowerCase() === 'host').length, 1);

  const dup = await rawHttp(
    p,
    `GET http://127.0.0.1:${srv.port}/y HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\nHost: other.example\r\nConnection: close\r\n\r\n`,
  );
  assert.match(dup, /^HTTP\/1\.1 400 /);
  const zero = await rawHttp(p, `GET http://127.0.0.1:0/ HTTP/1.1\r\nHost: 127.0.0.1:0\r\nConnection: close\r\n\r\n`);
  assert.match(zero, /^HTTP\/1\.1 400 /);
  assert.equal(srv.seen.length, 1, 'only the first request reached the origin');
});

test('11: the refusal counters the README names appear in /status and /metrics', async (t) => {
  const p = await startProxy(t, { auth: { users: [{ username: 'u', password: 'p' }] } });
  // one auth failure (HTTP without Proxy-Authorization)
  const out = await rawHttp(p, 'GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(out, /^HTTP\/1\.1 407 /);
  const st = await statusOf(p);
  for (const k of ['clientsRefused', 'authFailures', 'badHandshakes', 'handshakeTimeouts', 'headersTooLarge', 'limitRefusals', 'idleTimeouts', 'loopRefusals', 'fdExhausted']) {
    assert.equal(typeof st.refusals?.[k], 'number', `/status refusals.${k}`);
  }
  assert.equal(st.refusals.authFailures, 1);
  const m = await (await fetch(`${p.url}/metrics`)).text();
  assert.match(m, /^holdfast_refusals_total\{reason="authFailures"\} 1$/m);
  assert.match(m, /^holdfast_refusals_total\{reason="badHandshakes"\} 0$/m);
});

const skipSandbox = sandboxSkip();

test('11: a listen name that resolves to a LAN address is an open proxy, at start and on reload', { skip: skipSandbox }, async (t) => {
  // in the test namespace: a LAN-like address on lo, and a name for it that begins with "127."
  const ip = '10.77.251.9';
  const name = '127.lan.hf-test';
  sh('ip', ['addr', 'add', `${ip}/32`, 'dev', 'lo']);
  t.after(() => sh('ip', ['addr', 'del', `${ip}/32`, 'dev', 'lo']));
  const hosts = readFileSync('/etc/hosts', 'utf8');
  t.after(() => writeFileSync('/etc/hosts', hosts));
  writeFileSync('/etc/hosts', `${hosts}\n${ip} ${name}\n`);

  const log = pino({ level: 'silent' });
  const isOpenProxy = (e: Error) => {
    assert.equal(e.name, 'ConfigError');
    assert.match(e.message, new RegExp(`^listen: ${name.replace(/\./g, '\\.')}:0 \\(bound to ${ip.replace(/\./g, '\\.')}:\\d+\\) is reachable`));
    return true;
  };
  await assert.rejects(startHoldfast(parseConfig({ listen: [`${name}:0`] }), { log }), isOpenProxy);
  // nothing is left listening there
  await assert.rejects(
    new Promise((resolve, reject) => {
      const s = connect({ host: ip, port: 1 });
      s.once('connect', resolve);
      s.once('error', reject);
    }),
  );
  // with auth it is fine
  const ok = await startHoldfast(parseConfig({ listen: [`${name}:0`], auth: { users: [{ username: 'u', password: 'p' }] } }), { log });
  await ok.close();
  // reload: the old config stays, the new listener is not left open
  const hf = await startHoldfast(parseConfig({ listen: ['127.0.0.1:0'] }), { log });
  t.after(() => hf.close());
  await assert.rejects(hf.reload(parseConfig({ listen: ['127.0.0.1:0', `${name}:0`] })), isOpenProxy);
  assert.equal(hf.listeners.length, 1);
  assert.equal(hf.listeners[0].bound().host, '127.0.0.1');
});

test('11: with the DNS server dead, /etc/hosts names and the thread pool still answer at once; lookups fail HF_DNS_TIMEOUT', { skip: skipSandbox, timeout: 120_000 }, async (t) => {
  // the test namespace's resolv.conf names 127.0.0.1: a server there that never answers
  const dead = createUdpSocket('udp4');
  let queries = 0;
  dead.on('message', () => queries++);
  await new Promise<void>((r) => dead.bind(53, '127.0.0.1', () => r()));
  t.after(() => dead.close());
  const p = await startProxy(t, { dns: { timeout: '3s' } });
  const echo = await echoServer(t);
  const order: string[] = [];
  const dead8 = Array.from({ length: 8 }, (_, i) =>
    socksRequest(p.port, 0x01, `dead${i}.hf-test`, 80).then((r) => {
      order.push('dead');
      r.socket.destroy();
      return r.reply.rep;
    }),
  );
  const deadline = Date.now() + 10_000;
  while (queries === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(queries > 0, 'the lookups reached the dead server');
  const fromHosts = socksRequest(p.port, 0x01, 'localhost', echo.port).then((r) => {
    order.push('localhost');
    r.socket.destroy();
    return r.reply.rep;
  });
  // fs work shares the thread pool with getaddrinfo
  const fsWork = readFile('/proc/self/status').then(() => order.push('fs'));
  assert.equal(await fromHosts, 0x00, 'a name in /etc/hosts connects');
  await fsWork;
  assert.deepEqual(order.slice(0, 2).sort(), ['fs', 'localhost'], `answered before any dead lookup: ${order.join(', ')}`);
  for (const rep of await Promise.all(dead8)) assert.equal(rep, 0x04, 'host unreachable');
  await flowsDrained(p.hf);
  const codes = p.logs.byMsg('flow close').filter((l) => String(l.dst ?? '').startsWith('dead') || l.code === 'HF_DNS_TIMEOUT');
  assert.equal(codes.filter((l) => l.code === 'HF_DNS_TIMEOUT').length, 8, JSON.stringify(codes.map((l) => l.code)));
});

/** pids of the processes under `root` (children, grandchildren...), with their command lines. */
function descendants(root: number): { pid: number; cmd: string }[] {
  const byParent = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      byParent.set(ppid, [...(byParent.get(ppid) ?? []), Number(name)]);
    } catch {
      /* gone */
    }
  }
  const out: { pid: number; cmd: string }[] = [];
  const walk = (p: number) => {
    for (const c of byParent.get(p) ?? []) {
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0').join(' ').trim();
      } catch {
        continue;
      }
      out.push({ pid: c, cmd });
      walk(c);
    }
  };
  walk(root);
  return out;
}

function alive(pid: number): boolean {
  try {
    // a zombie has no cmdline; a reaped or killed process has no /proc entry
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').length > 0;
  } catch {
    return false;
  }
}

test('11: the `ip -o monitor` child dies with holdfast, even when holdfast is SIGKILLed', { timeout: 60_000 }, async (t) => {
  const child = new Child([process.execPath, CLI, 'start', '--listen', '127.0.0.1:0']);
  t.after(() => child.kill()); // its process group: whatever is left, also on failure
  await child.waitForLine((l) => l.includes('"listening"'), 15_000, 'the listening line');
  let monitor: { pid: number; cmd: string } | undefined;
  const deadline = Date.now() + 10_000;
  while (!monitor && Date.now() < deadline) {
    monitor = descendants(child.pid).find((d) => d.cmd.startsWith('ip -o monitor'));
    if (!monitor) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(monitor, `holdfast runs ip -o monitor: ${JSON.stringify(descendants(child.pid))}`);
  process.kill(child.pid, 'SIGKILL'); // holdfast only, not its group
  await child.exited;
  const gone = Date.now() + 10_000;
  while (alive(monitor.pid) && Date.now() < gone) await new Promise((r) => setTimeout(r, 50));
  assert.equal(alive(monitor.pid), false, `ip -o monitor (${monitor.pid}) outlived holdfast`);
});

test('11: running out of fds is counted and logged once per burst, and holdfast serves again after', { timeout: 60_000 }, async (t) => {
  const echo = await echoServer(t);
  const child = new Child([process.execPath, CLI, 'start', '--listen', '127.0.0.1:0']);
  t.after(() => child.kill());
  const line = await child.waitForLine((l) => l.includes('"listening"'), 15_000, 'the listening line');
  const port = Number(/:(\d+)$/.exec(String(JSON.parse(line).listen))?.[1]);
  assert.ok(port > 0, line);
  // a low fd limit for this holdfast alone (once it has loaded its modules), then more clients
  // than it has fds: the accepted ones fill the table (libuv drops the rest without telling
  // Node), and their CONNECTs find no fd for the upstream socket
  const open = () => readdirSync(`/proc/${child.pid}/fd`).map(Number);
  const limit = open().length + 20;
  // full: every fd number below the limit is taken (numbers at or above it may exist from before)
  const fds = () => open().filter((n) => n < limit).length;
  await run('prlimit', ['--pid', String(child.pid), `--nofile=${limit}:${limit}`]);
  const clients: Socket[] = [];
  t.after(() => {
    for (const c of clients) c.destroy();
  });
  for (let i = 0; i < 60; i++) {
    const c = connect({ host: '127.0.0.1', port });
    c.on('error', () => {});
    clients.push(c);
  }
  const full = Date.now() + 10_000;
  while (fds() < limit && Date.now() < full) await new Promise((r) => setTimeout(r, 20));
  assert.equal(fds(), limit, 'holdfast has used every fd it may');
  // the clients it accepted (the others it closed) ask for a tunnel: no fd for the upstream socket
  const request = Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), requestBytes(0x01, '127.0.0.1', echo.port)]);
  for (const c of clients) if (!c.destroyed) c.write(request);
  await child.waitForLine((l) => l.includes('"out of file descriptors"'), 15_000, 'the fd exhaustion line');
  for (const c of clients) c.destroy();
  // holdfast answers again once the clients are gone
  let st: Record<string, any> | undefined;
  const deadline = Date.now() + 15_000;
  while (!st && Date.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(2000) });
      st = (await res.json()) as Record<string, any>;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.ok(st, 'holdfast serves /status again');
  assert.ok(st.refusals.fdExhausted >= 1, `fdExhausted ${st.refusals.fdExhausted}`);
  const logged = child.jsonLines().filter((l) => l.msg === 'out of file descriptors');
  assert.equal(logged.length, 1, `one line for the burst of ${st.refusals.fdExhausted}`);
});
