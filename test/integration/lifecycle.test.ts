// The real CLI's life (issue 7): SIGTERM/SIGINT drain (live tunnels keep working until
// shutdown.drain, then are cut; new connections are refused at once), SIGHUP reload (new
// listeners and users apply to new connections while a live tunnel keeps flowing; a bad config
// is rejected with 'reload rejected' and the old one stays, listeners included), and config
// errors at start (exit 2, the file and the key on stderr).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { closedAfter, connectTo, drain, socksLogin, connectV4 } from '../helpers/hardening.js';
import { Child, pollUntil, run } from '../helpers/proc.js';
import { closedPort, echoServer, tcpServer } from '../helpers/servers.js';
import { readAll, socksRequest } from '../helpers/socks-client.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'hf-life-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface LogLine {
  msg: string;
  [k: string]: unknown;
}

function parse(l: string): LogLine | undefined {
  try {
    const o = JSON.parse(l) as LogLine;
    return typeof o.msg === 'string' ? o : undefined;
  } catch {
    return undefined;
  }
}

class Cli {
  constructor(
    readonly child: Child,
    readonly file: string,
  ) {}
  logs(): LogLine[] {
    return this.child.lines.map(parse).filter((l): l is LogLine => l !== undefined);
  }
  /** the n-th (0-based) log line with this msg, past or future */
  async waitMsg(msg: string, n = 0, timeoutMs = 10_000): Promise<LogLine> {
    let seen = 0;
    const line = await this.child.waitForLine((l) => parse(l)?.msg === msg && seen++ === n, timeoutMs, `log '${msg}' #${n + 1}`);
    return parse(line)!;
  }
  write(config: unknown): void {
    writeFileSync(this.file, typeof config === 'string' ? config : JSON.stringify(config, null, 2) + '\n');
  }
  signal(sig: NodeJS.Signals): void {
    process.kill(this.child.pid, sig);
  }
}

async function startCli(t: TestContext, config: Record<string, unknown>): Promise<Cli> {
  assert.ok(existsSync(CLI), `${CLI} not built`);
  const file = join(tempDir(t), 'holdfast.yaml');
  writeFileSync(file, JSON.stringify({ log: { level: 'info' }, ...config }, null, 2) + '\n');
  const child = new Child([process.execPath, CLI, 'start', '--config', file]);
  t.after(() => child.kill());
  const cli = new Cli(child, file);
  const n = (config.listen as unknown[]).length;
  await cli.waitMsg('listening', n - 1);
  return cli;
}

/** Echo round trip through a tunnel socket (one 'data' event can hold it all: small payloads). */
async function roundTrip(s: Socket, text: string): Promise<string> {
  const got = once(s, 'data', { signal: AbortSignal.timeout(3000) });
  s.write(text);
  return String((await got)[0]);
}

function refused(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

test('SIGTERM with a live tunnel: new connections refused at once, the tunnel works within drain, then is cut at the deadline', async (t) => {
  const DRAIN = 2000;
  const port = await closedPort();
  const echo = await echoServer(t);
  const cli = await startCli(t, { listen: [`127.0.0.1:${port}`], shutdown: { drain: DRAIN } });
  const { socket, reply } = await socksRequest(port, 0x01, '127.0.0.1', echo.port);
  t.after(() => socket.destroy());
  assert.equal(reply.rep, 0x00);
  assert.equal(await roundTrip(socket, 'before'), 'before');

  const t0 = Date.now();
  const cut = closedAfter(socket, t0, DRAIN + 5000);
  cli.signal('SIGTERM');
  const stopping = await cli.waitMsg('stopping');
  assert.equal(stopping.flows, 1);
  assert.equal(stopping.drainMs, DRAIN);
  // the 'stopping' line is written just before the listener closes: poll (briefly) for the refusal
  const refusedAt = await pollUntil(async () => ((await refused(port)) === 'ECONNREFUSED' ? Date.now() : undefined), {
    timeoutMs: 500,
    intervalMs: 10,
    what: 'the listener to refuse connections',
  });
  t.diagnostic(`new connections refused ${refusedAt - t0} ms after SIGTERM`);

  await new Promise((r) => setTimeout(r, DRAIN / 4));
  assert.equal(await roundTrip(socket, 'during-1'), 'during-1', 'the tunnel works during the drain');
  await new Promise((r) => setTimeout(r, DRAIN / 2));
  assert.equal(await roundTrip(socket, 'during-2'), 'during-2');

  const cutMs = await cut;
  t.diagnostic(`tunnel cut ${cutMs} ms after SIGTERM (drain ${DRAIN} ms)`);
  assert.ok(cutMs >= DRAIN - 50 && cutMs <= DRAIN + 1000, `cut after ${cutMs} ms, expected ~${DRAIN}`);
  const exit = await cli.child.exited;
  assert.equal(exit.code, 0);
  const close = cli.logs().find((l) => l.msg === 'flow close');
  // issue 12: holdfast's own stop is a reason, not a failure
  assert.equal(close?.reason, 'shutdown');
  assert.equal(close?.code, undefined);
  assert.ok(cli.logs().some((l) => l.msg === 'stopped'));
});

test('SIGTERM / SIGINT: when the flows finish within the drain, holdfast exits without waiting for the deadline', async (t) => {
  const echo = await echoServer(t);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    const port = await closedPort();
    const cli = await startCli(t, { listen: [`127.0.0.1:${port}`], shutdown: { drain: '20s' } });
    const { socket } = await socksRequest(port, 0x01, '127.0.0.1', echo.port);
    const t0 = Date.now();
    cli.signal(sig);
    await cli.waitMsg('stopping');
    assert.equal(await roundTrip(socket, 'last words'), 'last words');
    socket.end();
    await readAll(socket);
    const exit = await cli.child.exited;
    const ms = Date.now() - t0;
    t.diagnostic(`${sig}: exited ${ms} ms after the signal, the tunnel having ended by itself`);
    assert.equal(exit.code, 0, sig);
    assert.ok(ms < 5000, `${sig}: exited after ${ms} ms, not at the 20 s deadline`);
    const close = cli.logs().find((l) => l.msg === 'flow close');
    assert.equal(close?.reason, 'done', `${sig}: the flow ended cleanly`);
  }
});

test('SIGHUP: a new listener and auth users apply to new connections; a live tunnel keeps flowing; bad configs are rejected and the old one stays', async (t) => {
  const [p1, p2, p3] = [await closedPort(), await closedPort(), await closedPort()];
  const echo = await echoServer(t);
  const cli = await startCli(t, { listen: [`127.0.0.1:${p1}`] });

  // a live tunnel, opened without auth; it must answer after every reload, good or bad
  const live = await socksRequest(p1, 0x01, '127.0.0.1', echo.port);
  t.after(() => live.socket.destroy());
  assert.equal(live.reply.rep, 0x00);
  let checks = 0;
  const liveStillFlows = async (when: string) => {
    const text = `live-${checks++}-${'y'.repeat(500)}`;
    assert.equal(await roundTrip(live.socket, text), text, `the live tunnel flows ${when}`);
  };
  await liveStillFlows('before the reload');

  const users = { users: [{ username: 'alice', password: 's3cret' }] };
  cli.write({ listen: [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], auth: users, log: { level: 'info' } });
  cli.signal('SIGHUP');
  const reloaded = await cli.waitMsg('reloaded');
  assert.equal(reloaded.flows, 1, 'the live tunnel counted at the reload');
  await cli.waitMsg('listening', 1);
  await liveStillFlows('after the reload');

  // new connections: auth required on the old listener and on the new one
  for (const port of [p1, p2]) {
    const g = await connectTo(port);
    g.write(Buffer.from([0x05, 0x01, 0x00]));
    assert.deepEqual([...(await drain(g, 3000)).bytes], [0x05, 0xff], `:${port} wants credentials now`);
    const ok = await socksLogin(port, 'alice', 's3cret', connectV4('127.0.0.1', echo.port));
    assert.equal(ok.reply[1], 0x00, `:${port} login and CONNECT`);
    assert.equal(await roundTrip(ok.socket, 'new'), 'new');
    ok.socket.destroy();
  }
  const http407 = await run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', '-x', `http://127.0.0.1:${p2}`, `http://127.0.0.1:${echo.port}/`], { allowFail: true });
  assert.equal(http407.stdout, '407');

  // bad configs: rejected, named, and nothing changes
  const occupier = await tcpServer(t, (s) => s.destroy());
  const bad: Array<[string, unknown, RegExp]> = [
    ['unknown key', { listen: [`127.0.0.1:${p1}`], limitz: {} }, /limitz/],
    ['not YAML', 'listen: [\n  - : :\n', /not valid YAML/],
    ['open proxy', { listen: ['0.0.0.0:0'] }, /allowUnauthenticated/],
    // the users would go and a listener would be added on a busy port: none of it may happen
    ['busy port', { listen: [`127.0.0.1:${p1}`, `127.0.0.1:${p3}`, `127.0.0.1:${occupier.port}`] }, /EADDRINUSE/],
  ];
  for (const [i, [what, config, why]] of bad.entries()) {
    cli.write(config);
    cli.signal('SIGHUP');
    const rej = await cli.waitMsg('reload rejected', i);
    assert.match(String(rej.why), why, `${what}: ${String(rej.why)}`);
    assert.equal(rej.file, cli.file, `${what}: names the file`);
    assert.equal(cli.logs().filter((l) => l.msg === 'reloaded').length, 1, `${what}: not applied`);
    await liveStillFlows(`after the rejected reload (${what})`);
  }
  assert.equal(await refused(p3), 'ECONNREFUSED', 'the listener opened before the busy port failed was closed again');
  for (const port of [p1, p2]) {
    const g = await connectTo(port);
    g.write(Buffer.from([0x05, 0x01, 0x00]));
    assert.deepEqual([...(await drain(g, 3000)).bytes], [0x05, 0xff], `:${port} still listening and still wants credentials`);
  }

  assert.equal(cli.child.running, true);
  live.socket.end('bye');
  assert.equal((await readAll(live.socket)).toString(), 'bye', 'the live tunnel ends cleanly');
  assert.equal(checks, 6);
  cli.signal('SIGTERM');
  assert.equal((await cli.child.exited).code, 0);
});

test('config errors at start: exit 2, with the file and the key on stderr', async (t) => {
  const dir = tempDir(t);
  const cases: Array<[string, string, RegExp[]]> = [
    ['unknown key', JSON.stringify({ listen: ['127.0.0.1:0'], bogus: 1 }), [/\(top level\): unknown key\(s\) "bogus"/]],
    ['unknown nested key', JSON.stringify({ limits: { maxFlow: 3 } }), [/limits: unknown key\(s\) "maxFlow"/]],
    ['wrong type', JSON.stringify({ limits: { maxFlows: 'many' } }), [/limits\.maxFlows: /]],
    ['bad duration', JSON.stringify({ shutdown: { drain: 'soon' } }), [/shutdown\.drain: expected a duration/]],
    ['bad CIDR', JSON.stringify({ clients: ['10.0.0.0/33'] }), [/clients\.0: expected an address or CIDR/]],
    ['bad listen', JSON.stringify({ listen: ['nowhere'] }), [/listen\.0: expected HOST:PORT/]],
    ['not YAML', 'listen: [\n', [/not valid YAML/]],
  ];
  for (const [what, text, patterns] of cases) {
    const file = join(dir, `${what.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(file, text);
    const r = await run(process.execPath, [CLI, 'start', '--config', file], { allowFail: true, timeoutMs: 10_000 });
    assert.equal(r.code, 2, `${what}: exit 2 (got ${r.code}): ${r.stderr}`);
    assert.ok(r.stderr.includes(file), `${what}: the file is named: ${r.stderr}`);
    for (const p of patterns) assert.match(r.stderr, p, what);
  }
  const missing = join(dir, 'missing.yaml');
  const m = await run(process.execPath, [CLI, 'start', '--config', missing], { allowFail: true, timeoutMs: 10_000 });
  assert.equal(m.code, 2);
  assert.match(m.stderr, new RegExp(`${missing.replace(/[.]/g, '\\.')}: cannot read`));
  // secrets from a file that is not there: a config error too, naming the key
  const usersFile = join(dir, 'users.yaml');
  writeFileSync(usersFile, JSON.stringify({ listen: ['127.0.0.1:0'], auth: { usersFile: join(dir, 'nope') } }));
  const u = await run(process.execPath, [CLI, 'start', '--config', usersFile], { allowFail: true, timeoutMs: 10_000 });
  assert.equal(u.code, 2, u.stderr);
  assert.match(u.stderr, /auth\.usersFile: cannot read .*nope: ENOENT/);
});
