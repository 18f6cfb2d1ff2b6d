// The PAC file evaluated by pac-resolver (a real PAC engine: QuickJS with the standard functions)
// for a table of URLs: what goes through holdfast and what goes direct, and that no name is ever
// resolved to decide it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { before, test } from 'node:test';
import { createPacResolver, sandbox } from 'pac-resolver';
import { QuickJS } from 'quickjs-wasi';
import { defaultBypass } from '../../src/config.js';
import { renderPac, type PacOptions } from '../../src/pac.js';

const PROXY = 'PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080';
const DIRECT = 'DIRECT';

let wasm: Buffer;
before(() => {
  wasm = readFileSync(createRequire(import.meta.url).resolve('quickjs-wasi/quickjs.wasm'));
});

interface Calls {
  isInNet: string[];
  resolving: string[];
}

/** A resolver for opts, with the PAC functions wrapped to record what they were asked. */
async function resolverFor(opts: PacOptions): Promise<{ find: (url: string) => Promise<string>; calls: Calls }> {
  const qjs = await QuickJS.create({ wasm });
  const calls: Calls = { isInNet: [], resolving: [] };
  const isInNet = async (host: string, pattern: string, mask: string) => {
    calls.isInNet.push(host);
    return sandbox.isInNet(host, pattern, mask);
  };
  const refuse = (name: string) => {
    const f = async (host?: string) => {
      calls.resolving.push(`${name}(${host ?? ''})`);
      return null;
    };
    return f;
  };
  const fn = createPacResolver(qjs, renderPac(opts), {
    sandbox: { isInNet, dnsResolve: refuse('dnsResolve'), isResolvable: refuse('isResolvable'), myIpAddress: refuse('myIpAddress') },
  });
  return { find: (url) => fn(url), calls };
}

const table: ReadonlyArray<[string, string]> = [
  ['http://example.com/', PROXY],
  ['https://www.example.org/path?q=1', PROXY],
  ['http://EXAMPLE.com./', PROXY],
  ['http://localhost:8080/', DIRECT],
  ['http://LOCALHOST/', DIRECT],
  ['http://localhost.example.com/', PROXY],
  ['http://127.0.0.1/', DIRECT],
  ['http://127.1.2.3:81/', DIRECT],
  ['http://[::1]:8080/', DIRECT],
  ['http://printer.local/', DIRECT],
  ['http://a.b.local./', DIRECT],
  ['http://local/', PROXY],
  ['http://notlocal/', PROXY],
  ['http://10.0.0.1/', DIRECT],
  ['http://10.255.255.255/', DIRECT],
  ['http://11.0.0.1/', PROXY],
  ['http://172.16.0.1/', DIRECT],
  ['http://172.31.255.254/', DIRECT],
  ['http://172.32.0.1/', PROXY],
  ['http://172.15.255.255/', PROXY],
  ['http://192.168.1.1/', DIRECT],
  ['http://192.169.1.1/', PROXY],
  ['http://169.254.169.254/latest/meta-data', DIRECT],
  ['http://[fe80::1]/', DIRECT],
  ['http://[febf:ffff::1]/', DIRECT],
  ['http://[fec0::1]/', PROXY],
  ['http://[2001:db8::1]/', PROXY],
  ['http://[::ffff:10.1.2.3]/', DIRECT],
  ['http://[::ffff:8.8.8.8]/', PROXY],
  ['http://8.8.8.8/', PROXY],
  ['https://intranet/', PROXY],
  ['ftp://ftp.example.net/', PROXY],
];

test('default config: the table of URLs gets the expected answers, and no name is resolved', async () => {
  const { find, calls } = await resolverFor({ proxy: { host: '127.0.0.1', port: 1080 }, bypass: defaultBypass, direct: false });
  const wrong: string[] = [];
  for (const [url, want] of table) {
    const got = await find(url);
    if (got !== want) wrong.push(`${url}: got "${got}", want "${want}"`);
  }
  assert.deepEqual(wrong, []);
  assert.deepEqual(calls.resolving, [], 'no PAC function that resolves names was called');
  for (const h of calls.isInNet) assert.match(h, /^\d+\.\d+\.\d+\.\d+$/, `isInNet only ever sees IPv4 literals, got ${h}`);
  assert.ok(calls.isInNet.length > 0, 'isInNet decided the IPv4 cases');
});

test('custom bypass: <local>, exact names, *.suffix, a /32 and an IPv6 prefix; DIRECT fallback', async () => {
  const { find, calls } = await resolverFor({
    proxy: { host: '::1', port: 1090 },
    bypass: ['<local>', 'git.corp.example', '*.lan', '203.0.113.7', 'fd00::/8'],
    direct: true,
  });
  const P = 'PROXY [::1]:1090; SOCKS5 [::1]:1090; DIRECT';
  const cases: Array<[string, string]> = [
    ['http://intranet/', DIRECT],
    ['http://git.corp.example/', DIRECT],
    ['http://wiki.corp.example/', P],
    ['http://nas.lan/', DIRECT],
    ['http://lan.example/', P],
    ['http://203.0.113.7/', DIRECT],
    ['http://203.0.113.8/', P],
    ['http://[fd12:3456::1]/', DIRECT],
    ['http://[fe80::1]/', P],
    ['http://[::1]:80/', DIRECT], // the listener itself
    ['http://127.0.0.1/', P], // loopback is not in this list
    ['http://localhost/', DIRECT], // a plain name (<local>)
    ['http://localhost.example/', P],
  ];
  for (const [url, want] of cases) assert.equal(await find(url), want, url);
  assert.deepEqual(calls.resolving, []);
});
