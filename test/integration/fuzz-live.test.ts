// A live fuzz against a running holdfast: random bytes, truncated and mutated handshakes, for
// both protocols. Inside the loopback-only namespace only: mutated requests name random hosts.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { test } from 'node:test';
import { run } from '../helpers/proc.js';
import { flowsDrained, startProxy } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';
import { echoServer } from '../helpers/servers.js';
import { requestBytes } from '../helpers/socks-client.js';

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

function sample(echoPort: number): Buffer {
  const kind = randomInt(6);
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
  const baseline = openFds();
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < CASES && Date.now() - started < 90_000) {
      next++;
      await oneCase(p.port, sample(echo.port));
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
  // sockets close asynchronously: allow a moment, then compare with the baseline
  const deadline = Date.now() + 10_000;
  while (openFds() > baseline + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(openFds() <= baseline + 2, `open fds ${openFds()} vs baseline ${baseline}`);
});
