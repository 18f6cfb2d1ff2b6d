// Socket activation (issue 16): under `systemd-socket-activate -l 127.0.0.1:PORT holdfast start`
// holdfast serves SOCKS5 and HTTP on the socket it was handed, opens none of its own (not the
// config's 127.0.0.1:1080, not --listen), and the open-proxy check applies to the handed address.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { takeListenFds } from '../../src/inbound/activation.js';
import { onPath } from '../../src/system/proxy.js';
import { Child, run } from '../helpers/proc.js';
import { closedPort, httpServer } from '../helpers/servers.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

function skipReason(): string | undefined {
  if (onPath('systemd-socket-activate') && onPath('ss')) return undefined;
  const why = 'needs systemd-socket-activate (apt install systemd) and ss (iproute2)';
  if (process.env.CI === 'true') throw new Error(`CI=true but the socket-activation test ${why}`);
  console.log(`# skip: ${why}`);
  return why;
}
const skip = skipReason();

/** The TCP ports `pid` listens on, from `ss -ltnp` (the kernel's view, not holdfast's log). */
async function listeningPorts(pid: number): Promise<number[]> {
  const r = await run('ss', ['-Hltnp']);
  return r.stdout
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => Number(/:(\d+)\s/.exec(l.split(/\s+/)[3] + ' ')?.[1]))
    .sort((a, b) => a - b);
}

test('takeListenFds: fds 3.. for our pid, nothing for another pid, the variables removed either way', () => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b', OTHER: 'x' };
  assert.deepEqual(takeListenFds(env, 4242), [3, 4]);
  assert.deepEqual(env, { OTHER: 'x' });
  const inherited: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1' };
  assert.deepEqual(takeListenFds(inherited, 4242), [], 'variables meant for another process');
  assert.deepEqual(inherited, {});
  assert.deepEqual(takeListenFds({}, 4242), []);
  assert.throws(() => takeListenFds({ LISTEN_PID: '4242', LISTEN_FDS: 'x' }, 4242), /bad LISTEN_PID=4242 \/ LISTEN_FDS=x/);
});

test('under systemd-socket-activate: SOCKS5 and HTTP on each handed socket, no listener of its own', { skip }, async (t) => {
  const origin = await httpServer(t, (_req, res) => res.end('from origin\n'));
  const port = await closedPort();
  const port2 = await closedPort('127.0.0.2');
  const ignored = await closedPort();
  const child = new Child(
    ['systemd-socket-activate', '-l', `127.0.0.1:${port}`, '-l', `127.0.0.2:${port2}`, process.execPath, CLI, 'start', '--listen', `127.0.0.1:${ignored}`, '--log-level', 'info'],
    { env: { ...process.env, LISTEN_PID: undefined, LISTEN_FDS: undefined } },
  );
  t.after(() => child.kill());
  // systemd-socket-activate holds the sockets and starts holdfast at the first connection: this
  // connection starts it (it waits in the kernel's queue until holdfast accepts it)
  await new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const tryOnce = () => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve();
      });
      s.on('error', () => (Date.now() > deadline ? reject(new Error('systemd-socket-activate never listened')) : setTimeout(tryOnce, 50)));
    };
    tryOnce();
  });
  await child.waitForLine((l) => l.includes('"msg":"listening"') && l.includes(`:${port2}"`), 15_000, 'the second "listening"');
  const listening = child
    .jsonLines<{ msg: string; listen: string; activated?: boolean }>()
    .filter((l) => l.msg === 'listening')
    .map((l) => [l.listen, l.activated]);
  assert.deepEqual(listening, [
    [`127.0.0.1:${port}`, true],
    [`127.0.0.2:${port2}`, true],
  ]);
  assert.ok(
    child.lines.some((l) => l.includes('"msg":"socket activation: --listen is ignored, serving on the handed sockets"')),
    'says --listen is ignored',
  );

  for (const at of [`127.0.0.1:${port}`, `127.0.0.2:${port2}`]) {
    const socks = await run('curl', ['-sS', '-m', '10', '--socks5-hostname', at, `http://127.0.0.1:${origin.port}/`]);
    assert.equal(socks.stdout, 'from origin\n', `SOCKS5 at ${at}`);
    const http = await run('curl', ['-sS', '-m', '10', '-x', `http://${at}`, `http://127.0.0.1:${origin.port}/`]);
    assert.equal(http.stdout, 'from origin\n', `HTTP proxy at ${at}`);
    const status = await run('curl', ['-sS', '-m', '10', `http://${at}/status`]);
    assert.ok(Array.isArray((JSON.parse(status.stdout) as { flows: unknown[] }).flows), status.stdout);
  }

  // the kernel's view: the process listens on the handed sockets only (not the config's
  // 127.0.0.1:1080, not --listen)
  assert.deepEqual(await listeningPorts(child.pid), [port, port2].sort((a, b) => a - b));
  // a reload (SIGHUP) keeps serving on the handed sockets and opens none of the config's
  process.kill(child.pid, 'SIGHUP');
  await child.waitForLine((l) => l.includes('"msg":"reloaded"'), 10_000, '"reloaded"');
  assert.deepEqual(await listeningPorts(child.pid), [port, port2].sort((a, b) => a - b));
  const again = await run('curl', ['-sS', '-m', '10', '--socks5-hostname', `127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
  assert.equal(again.stdout, 'from origin\n');

  process.kill(child.pid, 'SIGTERM');
  const ended = await child.exited;
  assert.equal(ended.code, 0, child.stderrLines.join('\n'));
});

test('the open-proxy check applies to a handed socket: 0.0.0.0 without auth is refused (exit 2)', { skip }, async (t) => {
  const port = await closedPort();
  const child = new Child(['systemd-socket-activate', '-l', `0.0.0.0:${port}`, process.execPath, CLI, 'start'], {
    env: { ...process.env, LISTEN_PID: undefined, LISTEN_FDS: undefined },
  });
  t.after(() => child.kill());
  const deadline = Date.now() + 10_000;
  // connect until holdfast has been started (and has refused to serve)
  while (child.running && Date.now() < deadline) {
    await new Promise<void>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.setTimeout(1000, () => s.destroy());
    });
    if (child.running) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(!child.running, `holdfast still serves on 0.0.0.0:${port} after 10 s: ${child.lines.slice(-3).join(' ')}`);
  const ended = await child.exited;
  assert.equal(ended.code, 2, child.stderrLines.join('\n'));
  assert.ok(
    child.stderrLines.some((l) => l.startsWith(`holdfast: listen: 0.0.0.0:${port} is reachable from other hosts`)),
    child.stderrLines.join('\n'),
  );
});
