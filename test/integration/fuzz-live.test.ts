// A live fuzz against a running holdfast: random bytes, truncated and mutated handshakes, for
// both protocols. Inside the loopback-only namespace only: mutated requests name random hosts.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { test } from 'node:test';
import { Spares } from '../../src/egress/dial.js';
import { run } from '../helpers/proc.js';
import { flowsDrained, startProxy } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { echoServer } from '../helpers/servers.js';
import { requestBytes } from '../helpers/socks-client.js';
import { frame, socksAssociate, udpEcho, udpSocket, unframe } from '../helpers/udp-echo.js';

const skip = sandboxSkip();
const CASES = 3000;
const CONCURRENCY = 40;
const PER_CASE_MS = 400;

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function mutate(b: Buffer): Buffer {
  const out = Buffer.from(b);
  const n = 1 + randomInt(3);
  for (let i = 0; i < n; i++) {
    const op = randomInt(4);
    const at = randomInt(out.length);
    if (op === 0) out[at] = randomInt(256);
    else if (op === 1) out[at] ^= 1 << randomInt(8);
    else if (op === 2) return out.subarray(0, at); // truncate
    else out[at] = [0x00, 0xff, 0x05, 0x01, 0x03, 0x04][randomInt(6)];
  }
  return out;
}

/** Requests that point back at holdfast (issue 11): its port at 0.0.0.0, ::, "0", nested in one write. */
function loopSample(selfPort: number): Buffer {
  const greeting = Buffer.from([0x05, 0x01, 0x00]);
  const self = ['0.0.0.0', '::', '0', '127.0.0.1', 'localhost'][randomInt(5)];
  switch (randomInt(4)) {
    case 0: {
      const one = Buffer.concat([greeting, requestBytes(0x01, self, selfPort)]);
      return Buffer.concat(Array.from({ length: 1 + randomInt(20) }, () => one));
    }
    case 1:
      return Buffer.from(`CONNECT ${self.includes(':') ? `[${self}]` : self}:${selfPort} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(1 + randomInt(5)));
    case 2:
      return Buffer.from(`GET http://${self.includes(':') ? `[${self}]` : self}:${selfPort}/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    default:
      return Buffer.concat([greeting, requestBytes(0x01, self, [0, selfPort, 1 + randomInt(65535)][randomInt(3)])]);
  }
}

function sample(echoPort: number, selfPort = 0): Buffer {
  const kind = randomInt(selfPort ? 7 : 6);
  if (kind === 6) return loopSample(selfPort);
  const greeting = Buffer.from([0x05, 0x01, 0x00]);
  const hosts = ['127.0.0.1', '::1', 'localhost', `h${randomInt(1e6)}.example`, `10.${randomInt(256)}.0.1`];
  const host = hosts[randomInt(hosts.length)];
  switch (kind) {
    case 0:
      return randomBytes(1 + randomInt(300));
    case 1:
      return mutate(Buffer.concat([greeting, requestBytes(1 + randomInt(3), host, echoPort)]));
    case 2:
      return Buffer.concat([Buffer.from([0x05]), randomBytes(randomInt(600))]);
    case 3:
      return mutate(Buffer.from(`CONNECT ${host}:${echoPort} HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    case 4:
      return mutate(Buffer.from(`GET http://${host}:${echoPort}/x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${randomInt(20)}\r\n\r\n`));
    default:
      return Buffer.from(`${'GET'.slice(0, randomInt(4))} ${randomBytes(randomInt(50)).toString('latin1')}\r\n\r\n`, 'latin1');
  }
}

function oneCase(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, PER_CASE_MS);
    s.on('error', done);
    s.on('close', done);
    s.on('data', () => {});
    s.on('connect', () => {
      // sometimes in pieces, sometimes half-closed after
      const cut = randomInt(bytes.length + 1);
      s.write(bytes.subarray(0, cut));
      s.write(bytes.subarray(cut));
      if (randomInt(2)) s.end();
    });
  });
}

test(`live fuzz: ${CASES} random and mutated handshakes; the proxy still serves, leaks nothing`, { skip, timeout: 120_000 }, async (t) => {
  const p = await startProxy(t, { dial: { timeout: 300 } });
  const echo = await echoServer(t);
  // warm up so lazily opened handles (resolver, etc.) are part of the baseline
  await run('curl', ['-sS', '--max-time', '5', '--socks5', `127.0.0.1:${p.port}`, `http://127.0.0.1:${echo.port}/`], { allowFail: true });
  await flowsDrained(p.hf);
  // the dialer's spare sockets are fds too, made and closed as dials come (egress/dial.ts Spares):
  // every count below leaves them out
  const held = () => openFds() - p.hf.spareSockets();
  const baseline = held();
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < CASES && Date.now() - started < 90_000) {
      next++;
      await oneCase(p.port, sample(echo.port, p.port));
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  t.diagnostic(`${next} cases in ${Date.now() - started} ms`);
  assert.equal(next, CASES, 'every case ran within the time bound');

  // still serves both protocols
  const socks = await run('curl', ['-sS', '--max-time', '5', '--socks5', `127.0.0.1:${p.port}`, `telnet://127.0.0.1:${echo.port}`], {
    input: 'alive',
    allowFail: true,
  });
  assert.equal(socks.stdout, 'alive');
  const st = await fetch(`${p.url}/status`);
  assert.equal(st.status, 200);
  await st.text();

  await flowsDrained(p.hf, 10_000);
  // no request that pointed back at holdfast was dialled (a loop would have come back as a client)
  const loops = p.logs.byMsg('flow open').filter((l) => String(l.dst).endsWith(`:${p.port}`));
  assert.equal(loops.length, 0, `flows to holdfast itself: ${JSON.stringify(loops.slice(0, 3))}`);
  // sockets close asynchronously: allow a moment, then compare with the baseline
  const deadline = Date.now() + 10_000;
  while (held() > baseline + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(held() <= baseline + 2, `open fds ${openFds()} (${p.hf.spareSockets()} spare sockets) vs baseline ${baseline}`);
  assert.ok(p.hf.spareSockets() <= Spares.maxDepth * 2, `spare sockets ${p.hf.spareSockets()}: at most maxDepth per egress (lo, IPv4 and IPv6)`);
});

/** A SOCKS5 UDP datagram from random, mutated and hostile parts (port 0, unspecified, names, FRAG). */
function datagram(echoPort: number): Buffer {
  const hosts = ['127.0.0.1', '::1', '0.0.0.0', '::', 'localhost', '0', `h${randomInt(1e6)}.example`];
  const host = hosts[randomInt(hosts.length)];
  const port = [0, echoPort, randomInt(65536)][randomInt(3)];
  const head = requestBytes(0x01, host, port).subarray(3); // ATYP ADDR PORT
  const base = Buffer.concat([Buffer.from([0, 0, randomInt(4) === 0 ? randomInt(256) : 0]), head, randomBytes(randomInt(64))]);
  switch (randomInt(4)) {
    case 0:
      return randomBytes(randomInt(100));
    case 1:
      return mutate(base);
    default:
      return base;
  }
}

test('live fuzz: random and hostile SOCKS5 UDP datagrams; the association still relays, the process lives', { skip, timeout: 120_000 }, async (t) => {
  const p = await startProxy(t);
  const echo = await udpEcho(t);
  const a = await socksAssociate({ host: p.host, port: p.port });
  t.after(() => a.socket.destroy());
  a.socket.on('error', () => {});
  const c = await udpSocket(t);
  const N = 3000;
  for (let i = 0; i < N; i++) {
    c.socket.send(datagram(echo.port), a.relay.port, a.relay.host);
    if (i % 100 === 99) await new Promise((r) => setImmediate(r)); // let the relay read
  }
  // a well-formed datagram still makes the round trip (earlier answers may be queued before it)
  const deadline = Date.now() + 10_000;
  let ok = false;
  while (!ok && Date.now() < deadline) {
    c.socket.send(frame('127.0.0.1', echo.port, 'still alive'), a.relay.port, a.relay.host);
    await new Promise((r) => setTimeout(r, 200));
    ok = c.inbox.all.some((d) => unframe(d.msg).payload.toString() === 'still alive');
  }
  assert.ok(ok, 'the association relays after the fuzz');
  const st = (await (await fetch(`${p.url}/status`)).json()) as { socks5: { udp: Record<string, number> } };
  t.diagnostic(JSON.stringify(st.socks5.udp));
  assert.ok(st.socks5.udp.badPort > 0, 'port-0 datagrams were seen and dropped');
  a.socket.destroy();
  await flowsDrained(p.hf, 10_000);
});
