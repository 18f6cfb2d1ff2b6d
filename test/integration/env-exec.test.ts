// `holdfast env` and `holdfast exec`: real programs (curl, a Node fetch with undici's
// EnvHttpProxyAgent) reach a test server through a running holdfast because of the variables
// alone; the flow appears in /status while the request is held open. no_proxy is honoured; exec
// passes on exit codes and signals.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Child, deferred, run, type Deferred, type RunResult } from '../helpers/proc.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { httpServer } from '../helpers/servers.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const UNDICI = pathToFileURL(createRequire(import.meta.url).resolve('undici')).href;
/** Loopback, but not on the bypass list of the test config: requests to it go through holdfast. */
const FAR = '127.0.0.2';

interface StatusFlow {
  kind: string;
  dst: string;
  egress: string | null;
}

async function flows(p: TestProxy): Promise<StatusFlow[]> {
  const r = await fetch(`${p.url}/status`, { signal: AbortSignal.timeout(5000) });
  return ((await r.json()) as { flows: StatusFlow[] }).flows;
}

/** A config file pointing at p whose bypass list leaves 127.0.0.2 out (the listener is added). */
function configFor(t: TestContext, p: TestProxy): string {
  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-env-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'holdfast.yaml');
  writeFileSync(file, `listen: [127.0.0.1:${p.port}]\npac:\n  bypass: [localhost, "*.local"]\n`);
  return file;
}

/** A server on host that holds each request until released; `arrived` resolves with its path. */
async function heldServer(t: TestContext, host: string) {
  const waiting = new Map<string, Deferred<void>>();
  const arrivals: Array<Deferred<string>> = [deferred<string>()];
  const srv = await httpServer(
    t,
    (req: IncomingMessage, res: ServerResponse) => {
      const path = req.url ?? '';
      const gate = deferred<void>();
      waiting.set(path, gate);
      arrivals[arrivals.length - 1].resolve(path);
      void gate.promise.then(() => {
        res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
        res.end(`hello ${path}`);
      });
    },
    host,
  );
  return {
    port: srv.port,
    seen: srv.seen,
    /** the next request's path */
    next(): Promise<string> {
      return arrivals[arrivals.length - 1].promise.then((p) => {
        arrivals.push(deferred<string>());
        return p;
      });
    },
    release(path: string) {
      waiting.get(path)?.resolve();
    },
  };
}

/** Start argv, wait for the held request, read /status, release it; return the flow seen and the result. */
async function throughHoldfast(
  p: TestProxy,
  srv: Awaited<ReturnType<typeof heldServer>>,
  argv: string[],
  path: string,
): Promise<{ flow: StatusFlow | undefined; result: RunResult; all: StatusFlow[] }> {
  const done = run(argv[0], argv.slice(1), { timeoutMs: 20_000, allowFail: true });
  const arrived = await Promise.race([srv.next(), done.then((r) => Promise.reject(new Error(`${argv.join(' ')} ended first: ${r.code} ${r.stderr}`)))]);
  assert.equal(arrived, path);
  const all = await flows(p);
  srv.release(path);
  const result = await done;
  return { flow: all.find((f) => f.dst === `${FAR}:${srv.port}`), result, all };
}

test('holdfast exec -- curl: the request goes through holdfast (http_proxy), the flow is in /status', async (t) => {
  const p = await startProxy(t);
  const srv = await heldServer(t, FAR);
  const cfg = configFor(t, p);
  const { flow, result, all } = await throughHoldfast(
    p,
    srv,
    [process.execPath, CLI, 'exec', '--config', cfg, '--', 'curl', '-sS', '--max-time', '10', `http://${FAR}:${srv.port}/curl`],
    '/curl',
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, 'hello /curl');
  assert.ok(flow, `/status lists the flow: ${JSON.stringify(all)}`);
  assert.equal(flow.kind, 'http-forward');
  assert.equal(flow.egress, 'lo');
});

test('holdfast exec: all_proxy=socks5h:// carries a client that only reads all_proxy', async (t) => {
  const p = await startProxy(t);
  const srv = await heldServer(t, FAR);
  const cfg = configFor(t, p);
  const script = `unset http_proxy HTTP_PROXY; exec curl -sS --max-time 10 http://${FAR}:${srv.port}/socks`;
  const { flow, result, all } = await throughHoldfast(p, srv, [process.execPath, CLI, 'exec', '--config', cfg, '--', 'sh', '-c', script], '/socks');
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, 'hello /socks');
  assert.ok(flow, `/status lists the flow: ${JSON.stringify(all)}`);
  assert.equal(flow.kind, 'socks5-connect');
});

test('eval "$(holdfast env)": a Node fetch with undici EnvHttpProxyAgent goes through holdfast; no_proxy hosts do not', async (t) => {
  const p = await startProxy(t);
  const srv = await heldServer(t, FAR);
  const near = await httpServer(t); // 127.0.0.1: the listener's own address, on no_proxy
  const cfg = configFor(t, p);
  const js =
    `const { EnvHttpProxyAgent, fetch } = await import(${JSON.stringify(UNDICI)});` +
    'const dispatcher = new EnvHttpProxyAgent();' +
    'for (const url of process.argv.slice(1)) { const r = await fetch(url, { dispatcher }); console.log(r.status, await r.text()); }' +
    'await dispatcher.close();';
  const script = `eval "$("$0" "$1" env --config "$2")" && exec "$0" --input-type=module -e "$3" "$4" "$5"`;
  const { flow, result, all } = await throughHoldfast(
    p,
    srv,
    ['sh', '-c', script, process.execPath, CLI, cfg, js, `http://${FAR}:${srv.port}/undici`, `http://127.0.0.1:${near.port}/direct`],
    '/undici',
  );
  assert.equal(result.code, 0, result.stderr);
  assert.ok(flow, `/status lists the flow: ${JSON.stringify(all)}`);
  // undici's ProxyAgent tunnels plain http:// through CONNECT too
  assert.ok(['http-connect', 'http-forward'].includes(flow.kind), flow.kind);
  const lines = result.stdout.trim().split('\n');
  assert.equal(lines[0], '200 hello /undici');
  assert.match(lines[1], /^200 /);
  // 127.0.0.1 is on no_proxy (the listener's address): undici went direct, holdfast never saw it
  assert.equal(near.seen.length, 1);
  assert.equal(p.logs.byMsg('flow open').filter((l) => String(l.dst).startsWith('127.0.0.1:')).length, 0);
  assert.equal(p.logs.byMsg('flow open').length, 1, 'one flow in all');
});

test('holdfast env prints both cases for each shell, and sh evaluates it to the right values', async () => {
  const listen = ['--listen', '127.0.0.1:1090'];
  const sh = await run(process.execPath, [CLI, 'env', '--shell', 'sh', ...listen]);
  const noProxy = 'localhost,127.0.0.0/8,127.0.0.1,::1,[::1],.local,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,fe80::/10';
  assert.equal(
    sh.stdout,
    [
      "export http_proxy='http://127.0.0.1:1090'",
      "export https_proxy='http://127.0.0.1:1090'",
      "export all_proxy='socks5h://127.0.0.1:1090'",
      `export no_proxy='${noProxy}'`,
      "export HTTP_PROXY='http://127.0.0.1:1090'",
      "export HTTPS_PROXY='http://127.0.0.1:1090'",
      "export ALL_PROXY='socks5h://127.0.0.1:1090'",
      `export NO_PROXY='${noProxy}'`,
      '',
    ].join('\n'),
  );
  const evald = await run('sh', ['-c', 'eval "$("$0" "$1" env --shell sh --listen "[::1]:1091")" && printf "%s|%s|%s|%s\\n" "$http_proxy" "$HTTPS_PROXY" "$all_proxy" "$NO_PROXY"', process.execPath, CLI]);
  assert.equal(evald.stdout, `http://[::1]:1091|http://[::1]:1091|socks5h://[::1]:1091|${noProxy}\n`);

  const fish = await run(process.execPath, [CLI, 'env', '--shell', 'fish', ...listen]);
  assert.equal(fish.stdout.split('\n')[0], "set -gx http_proxy 'http://127.0.0.1:1090'");
  assert.equal(fish.stdout.split('\n')[6], "set -gx ALL_PROXY 'socks5h://127.0.0.1:1090'");
  const ps = await run(process.execPath, [CLI, 'env', '--shell', 'powershell', ...listen]);
  assert.equal(ps.stdout.split('\n')[2], "$env:all_proxy = 'socks5h://127.0.0.1:1090'");
  const cmd = await run(process.execPath, [CLI, 'env', '--shell', 'cmd', ...listen]);
  assert.equal(cmd.stdout.split('\n')[4], 'set "HTTP_PROXY=http://127.0.0.1:1090"');
  assert.equal(cmd.stdout.trim().split('\n').length, 8);

  const unset = await run(process.execPath, [CLI, 'env', '--unset', '--shell', 'sh']);
  assert.equal(unset.stdout, 'unset http_proxy https_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY\n');
  const bad = await run(process.execPath, [CLI, 'env', '--shell', 'tcsh'], { allowFail: true });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--shell tcsh: expected one of sh, fish, powershell, cmd/);
});

test('holdfast exec returns the exit code, re-raises a signal (or 128+n), and 127 for a missing command', async () => {
  const exec = (...args: string[]) => run(process.execPath, [CLI, 'exec', '--listen', '127.0.0.1:1090', '--', ...args], { allowFail: true });
  const seven = await exec('sh', '-c', 'echo "$http_proxy $ALL_PROXY"; exit 7');
  assert.equal(seven.code, 7);
  assert.equal(seven.stdout, 'http://127.0.0.1:1090 socks5h://127.0.0.1:1090\n');
  const term = await exec('sh', '-c', 'kill -TERM $$');
  assert.equal(term.code, null);
  assert.equal(term.signal, 'SIGTERM', 'holdfast died of the same signal');
  const pipe = await exec('sh', '-c', 'kill -PIPE $$');
  assert.equal(pipe.code, 141, 'Node ignores SIGPIPE, so 128+13');
  const missing = await exec('no-such-command-hf');
  assert.equal(missing.code, 127);
  assert.match(missing.stderr, /no-such-command-hf: command not found/);
  const none = await run(process.execPath, [CLI, 'exec'], { allowFail: true });
  assert.equal(none.code, 2);
});

test('holdfast exec passes SIGTERM and SIGINT on to the command and exits as it does', async (t) => {
  for (const [sig, code] of [
    ['SIGTERM', 3],
    ['SIGINT', 4],
  ] as const) {
    const script = `trap 'echo got-${sig}; exit ${code}' ${sig.slice(3)}; echo ready; i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 9`;
    const child = new Child([process.execPath, CLI, 'exec', '--listen', '127.0.0.1:1090', '--', 'sh', '-c', script]);
    t.after(() => child.kill());
    await child.waitForLine((l) => l === 'ready', 10_000, '"ready"');
    const t0 = Date.now();
    process.kill(child.pid, sig); // holdfast only, not its process group
    const ended = await child.exited;
    assert.equal(ended.code, code, `${sig}: exit ${ended.code ?? ended.signal} after ${Date.now() - t0} ms; ${child.lines.join(' ')}; ${child.stderrLines.join(' ')}`);
    assert.ok(child.lines.includes(`got-${sig}`));
  }
});
