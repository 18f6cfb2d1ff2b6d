// GET /proxy.pac on a running holdfast, and `holdfast pac`: the same file, pointing at the listener
// the request came in on, with the config's bypass list and DIRECT setting.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/proc.js';
import { startProxy } from '../helpers/proxy.js';
import { sandboxSkip } from '../helpers/sandbox.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

function get(host: string, port: number, path: string, method = 'GET'): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

test('GET /proxy.pac serves the PAC with its content type, identical to `holdfast pac` for that listener', async (t) => {
  const p = await startProxy(t);
  const r = await get('127.0.0.1', p.port, '/proxy.pac');
  assert.equal(r.status, 200);
  assert.equal(r.type, 'application/x-ns-proxy-autoconfig');
  assert.match(r.body, /function FindProxyForURL\(url, host\)/);
  assert.match(r.body, new RegExp(`^var PROXY = "PROXY 127\\.0\\.0\\.1:${p.port}; SOCKS5 127\\.0\\.0\\.1:${p.port}";`, 'm'));
  const cli = await run(process.execPath, [CLI, 'pac', '--listen', `127.0.0.1:${p.port}`]);
  assert.equal(cli.stdout, r.body);

  const head = await get('127.0.0.1', p.port, '/proxy.pac', 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  const post = await get('127.0.0.1', p.port, '/proxy.pac', 'POST');
  assert.equal(post.status, 405);

  // asked through the proxy itself (absolute form), it is still holdfast's own page
  const viaProxy = await run('curl', ['-sS', '--max-time', '5', '-x', p.url, `http://127.0.0.1:${p.port}/proxy.pac`]);
  assert.equal(viaProxy.stdout, r.body);
});

test('the PAC points at the address the request came in on: IPv6 and wildcard listeners', { skip: sandboxSkip() }, async (t) => {
  const v6 = await startProxy(t, {}, ['[::1]:0']);
  const r6 = await get('::1', v6.port, '/proxy.pac');
  assert.match(r6.body, new RegExp(`"PROXY \\[::1\\]:${v6.port}; SOCKS5 \\[::1\\]:${v6.port}"`));

  // (in the loopback-only test namespace 0.0.0.0 reaches nobody else)
  const any = await startProxy(t, { allowUnauthenticated: true, clients: ['127.0.0.0/8'] }, ['0.0.0.0:0']);
  const r4 = await get('127.0.0.1', any.port, '/proxy.pac');
  assert.match(r4.body, new RegExp(`"PROXY 127\\.0\\.0\\.1:${any.port}; SOCKS5 127\\.0\\.0\\.1:${any.port}"`));
  const r42 = await get('127.0.0.2', any.port, '/proxy.pac');
  assert.match(r42.body, new RegExp(`"PROXY 127\\.0\\.0\\.2:${any.port}; SOCKS5 127\\.0\\.0\\.2:${any.port}"`));
  // `holdfast pac` for a wildcard listener names loopback
  const cli = await run(process.execPath, [CLI, 'pac', '--listen', `0.0.0.0:${any.port}`]);
  assert.equal(cli.stdout, r4.body);
});

test('pac.bypass and pac.direct from the config: served and printed alike', async (t) => {
  const pac = { bypass: ['<local>', '*.corp.example', '198.51.100.0/24'], direct: true };
  const p = await startProxy(t, { pac });
  const r = await get('127.0.0.1', p.port, '/proxy.pac');
  assert.match(r.body, /^var BYPASS_PLAIN = true;/m);
  assert.match(r.body, /^var BYPASS_SUFFIXES = \["\.corp\.example"\];/m);
  assert.match(r.body, /^var BYPASS_NETS4 = \[\["198\.51\.100\.0","255\.255\.255\.0"\],\["127\.0\.0\.1","255\.255\.255\.255"\]\];/m);
  assert.match(r.body, /; DIRECT";$/m);

  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-pac-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'holdfast.yaml');
  writeFileSync(file, `listen: [127.0.0.1:${p.port}]\npac:\n  bypass: ["<local>", "*.corp.example", 198.51.100.0/24]\n  direct: true\n`);
  const cli = await run(process.execPath, [CLI, 'pac', '--config', file]);
  assert.equal(cli.stdout, r.body);

  const bad = await run(process.execPath, [CLI, 'pac', '--listen', 'nonsense'], { allowFail: true });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--listen nonsense: expected HOST:PORT/);
});

test('reload: a changed pac.bypass is served at once', async (t) => {
  const p = await startProxy(t);
  const before = await get('127.0.0.1', p.port, '/proxy.pac');
  assert.match(before.body, /"\.local"/);
  const { parseConfig } = await import('../../src/config.js');
  await p.hf.reload(parseConfig({ listen: [`127.0.0.1:${p.port}`], pac: { bypass: ['*.lan'] } }));
  const after = await get('127.0.0.1', p.port, '/proxy.pac');
  assert.match(after.body, /^var BYPASS_SUFFIXES = \["\.lan"\];/m);
});
