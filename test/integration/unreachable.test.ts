// Reply codes that need a network we control: only inside the loopback-only test namespace
// (nothing here can leave the machine: these addresses have no route but the ones we add).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { test } from 'node:test';
import { startProxy } from '../helpers/proxy.js';
import { sandboxSkip, swallowSyns } from '../helpers/sandbox.js';
import { readAll } from '../helpers/socks-client.js';
import { socksRequest } from '../helpers/socks-client.js';

const skip = sandboxSkip();

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

/** Sockets of this process's netns still sending SYNs to 192.0.2.77 (`ss`). */
function synSentTo77(): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'syn-sent', 'dst', '192.0.2.77'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

test('no route at all: SOCKS 0x03 network unreachable, HTTP 502', { skip }, async (t) => {
  const p = await startProxy(t);
  // 198.51.100.0/24 (TEST-NET-2) has no route in the sandbox: the kernel answers ENETUNREACH
  const { socket, reply } = await socksRequest(p.port, 0x01, '198.51.100.7', 80);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x03);
  const close = await p.logs.waitFor((l) => l.msg === 'flow close');
  assert.equal(close.code, 'HF_NET_UNREACHABLE');
});

test('an unreachable route: SOCKS 0x04 host unreachable', { skip }, async (t) => {
  ip('route', 'add', 'unreachable', '203.0.113.0/24');
  t.after(() => ip('route', 'del', 'unreachable', '203.0.113.0/24'));
  const p = await startProxy(t);
  const { socket, reply } = await socksRequest(p.port, 0x01, '203.0.113.9', 80);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x04);
});

test('a server that never answers the SYN: SOCKS 0x06 after dial.timeout, CONNECT 504', { skip }, async (t) => {
  swallowSyns(t, 'hfdrop', '192.0.2.77');
  const p = await startProxy(t, { dial: { timeout: 600 } });
  const started = Date.now();
  const { socket, reply } = await socksRequest(p.port, 0x01, '192.0.2.77', 80);
  t.after(() => socket.destroy());
  const took = Date.now() - started;
  assert.equal(reply.rep, 0x06);
  assert.ok(took >= 550 && took < 3000, `took ${took} ms`);

  const s = connect(p.port, '127.0.0.1');
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write('CONNECT 192.0.2.77:443 HTTP/1.1\r\nHost: 192.0.2.77:443\r\n\r\n');
  const text = (await readAll(s)).toString();
  assert.match(text, /^HTTP\/1\.1 504 /);
  assert.match(text, /HF_DIAL_TIMEOUT/);
});

test('a forwarded request whose client leaves while its dial waits for a SYN-ACK: the dial is called off at once, its socket closed', { skip }, async (t) => {
  swallowSyns(t, 'hfdrop', '192.0.2.77');
  // a dial.timeout far longer than the test waits: only calling the dial off ends it in time
  const p = await startProxy(t, { dial: { timeout: 20_000 } });
  const s = connect(p.port, '127.0.0.1');
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write('GET http://192.0.2.77/x HTTP/1.1\r\nHost: 192.0.2.77\r\n\r\n');
  // the dial is on its way ('flow open' waits for it to connect): its socket sends SYNs that get no answer
  const deadline = Date.now() + 5000;
  while (synSentTo77() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(synSentTo77() >= 1, 'the forward dials 192.0.2.77 (a socket in SYN-SENT)');
  const left = Date.now();
  s.destroy();
  // a flow that never connected says where it was going in its close line
  const close = await p.logs.waitFor((l) => l.msg === 'flow close' && l.dst === '192.0.2.77:80', 5000);
  const took = Date.now() - left;
  assert.equal(close.reason, 'client left');
  assert.ok(took < 3000, `the flow ended ${took} ms after its client left (dial.timeout is 20 s)`);
  assert.equal(synSentTo77(), 0, 'the called-off dial closed its socket');
});
