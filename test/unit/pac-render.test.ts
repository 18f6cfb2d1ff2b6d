// The PAC file as text: valid JavaScript with FindProxyForURL(url, host), only standard PAC
// functions, the right PROXY/SOCKS5/DIRECT directive, the bypass list in the right slots; the
// bypass list parsed once and spelled for no_proxy.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Script } from 'node:vm';
import { ConfigError, defaultBypass, parseConfig } from '../../src/config.js';
import { clientEndpoint, noProxyList, parseBypass, pacTemplate, proxyDirective, renderPac } from '../../src/pac.js';

const lo = { host: '127.0.0.1', port: 1080 };

/** The standard PAC functions (Netscape's list plus what every browser ships). */
const standardPac = new Set([
  'isPlainHostName', 'dnsDomainIs', 'localHostOrDomainIs', 'isResolvable', 'isInNet', 'dnsResolve',
  'convert_addr', 'myIpAddress', 'dnsDomainLevels', 'shExpMatch', 'weekdayRange', 'dateRange', 'timeRange', 'alert',
]);
/** Functions that resolve names or read the host's own address: never called by holdfast's PAC. */
const resolving = ['dnsResolve', 'isResolvable', 'myIpAddress', 'dnsResolveEx', 'myIpAddressEx', 'isInNetEx', 'isResolvableEx'];

test('the rendered PAC is valid JavaScript defining FindProxyForURL(url, host)', () => {
  const pac = renderPac({ proxy: lo, bypass: defaultBypass, direct: false });
  const ctx: Record<string, unknown> = {};
  new Script(pac, { filename: 'proxy.pac' }).runInNewContext(ctx);
  assert.equal(typeof ctx.FindProxyForURL, 'function');
  assert.equal((ctx.FindProxyForURL as (...a: unknown[]) => unknown).length, 2);
  assert.doesNotMatch(pac, /\/\*@\w+\*\//, 'every slot is filled');
});

test('the PAC calls only standard PAC functions, its own helpers and parseInt; none that resolve names', () => {
  const pac = renderPac({ proxy: lo, bypass: [...defaultBypass, '<local>'], direct: true });
  const code = pac.replace(/\/\/.*$/gm, '').replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\/(?:[^/\\\n]|\\.)+\/\.test/g, 're.test');
  const own = new Set([...code.matchAll(/function\s+(\w+)\s*\(/g)].map((m) => m[1]));
  const called = new Set([...code.matchAll(/(?<![.\w])(\w+)\s*\(/g)].map((m) => m[1]));
  const keywords = new Set(['if', 'for', 'while', 'function', 'return', 'switch', 'catch']);
  const builtins = new Set(['parseInt']);
  for (const name of called) {
    if (keywords.has(name) || own.has(name) || builtins.has(name)) continue;
    assert.ok(standardPac.has(name), `calls ${name}(), which is not a standard PAC function`);
  }
  for (const name of resolving) assert.ok(!called.has(name), `must not call ${name}()`);
  assert.ok(called.has('isInNet') && called.has('dnsDomainIs') && called.has('isPlainHostName'));
  assert.ok(own.has('FindProxyForURL'));
});

test('isInNet is only reached after an IPv4-literal check', () => {
  const t = pacTemplate();
  // the one function that calls isInNet is called only in the IPv4-literal branches
  const callers = [...t.matchAll(/function (\w+)\([^)]*\) \{[^]*?\n\}/g)].filter((m) => m[0].includes('isInNet(')).map((m) => m[1]);
  assert.deepEqual(callers, ['bypassIpv4']);
  for (const line of t.split('\n').filter((l) => l.includes('bypassIpv4(') && !l.startsWith('function'))) {
    assert.match(line, /isIpv4Literal\(h\)|v4/, `guarded call: ${line.trim()}`);
  }
});

test('the directive: PROXY then SOCKS5 for the listener, DIRECT only when configured', () => {
  assert.equal(proxyDirective(lo, false), 'PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080');
  assert.equal(proxyDirective(lo, true), 'PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080; DIRECT');
  assert.equal(proxyDirective({ host: '::1', port: 1090 }, false), 'PROXY [::1]:1090; SOCKS5 [::1]:1090');
  const pac = renderPac({ proxy: { host: '::1', port: 1090 }, bypass: [], direct: true });
  assert.match(pac, /^var PROXY = "PROXY \[::1\]:1090; SOCKS5 \[::1\]:1090; DIRECT";/m);
});

test('the default bypass list fills the slots; the listener is added unless a range covers it', () => {
  const pac = renderPac({ proxy: lo, bypass: defaultBypass, direct: false });
  assert.match(pac, /^var BYPASS_NAMES = \["localhost"\];/m);
  assert.match(pac, /^var BYPASS_SUFFIXES = \["\.local"\];/m);
  assert.match(pac, /^var BYPASS_PLAIN = false;/m);
  assert.match(
    pac,
    /^var BYPASS_NETS4 = \[\["127\.0\.0\.0","255\.0\.0\.0"\],\["10\.0\.0\.0","255\.0\.0\.0"\],\["172\.16\.0\.0","255\.240\.0\.0"\],\["192\.168\.0\.0","255\.255\.0\.0"\],\["169\.254\.0\.0","255\.255\.0\.0"\]\];/m,
  );
  assert.match(pac, /^var BYPASS_NETS6 = \[\[\[0,0,0,0,0,0,0,1\],128\],\[\[65152,0,0,0,0,0,0,0\],10\]\];/m);
  // a LAN listener is not covered by an empty list: it is added on its own
  const lan = renderPac({ proxy: { host: '100.64.1.5', port: 1080 }, bypass: [], direct: false });
  assert.match(lan, /^var BYPASS_NETS4 = \[\["100\.64\.1\.5","255\.255\.255\.255"\]\];/m);
});

test('parseBypass: names, suffixes, ranges (host bits cleared), <local>, duplicates dropped', () => {
  assert.deepEqual(parseBypass(['Example.COM.', '*.corp', '.lan', '10.1.2.3/8', '<local>', 'fd00::1/8', '::1', 'example.com']), [
    { kind: 'name', name: 'example.com' },
    { kind: 'suffix', suffix: '.corp' },
    { kind: 'suffix', suffix: '.lan' },
    { kind: 'net', family: 4, ip: '10.0.0.0', prefixLen: 8 },
    { kind: 'plain' },
    { kind: 'net', family: 6, ip: 'fd00::', prefixLen: 8 },
    { kind: 'net', family: 6, ip: '::1', prefixLen: 128 },
  ]);
  assert.deepEqual(parseBypass([], { host: '::1', port: 1 }), [{ kind: 'net', family: 6, ip: '::1', prefixLen: 128 }]);
  assert.deepEqual(parseBypass(['::/0'], { host: '::1', port: 1 }), [{ kind: 'net', family: 6, ip: '::', prefixLen: 0 }]);
  assert.throws(() => parseBypass(['10.0.0.0/33']));
});

test('no_proxy: the comma form curl and undici read, with plain 127.0.0.1 and [::1] for tools without CIDR', () => {
  assert.equal(
    noProxyList(defaultBypass, lo),
    'localhost,127.0.0.0/8,127.0.0.1,::1,[::1],.local,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,fe80::/10',
  );
  assert.equal(noProxyList(['*.corp', '<local>'], { host: '192.0.2.7', port: 1080 }), '.corp,192.0.2.7');
});

test('clientEndpoint: wildcard listeners become loopback; IPv4-mapped peers lose the prefix', () => {
  assert.deepEqual(clientEndpoint({ host: '0.0.0.0', port: 1080 }), { host: '127.0.0.1', port: 1080 });
  assert.deepEqual(clientEndpoint({ host: '::', port: 1080 }), { host: '::1', port: 1080 });
  assert.deepEqual(clientEndpoint({ host: '192.0.2.1', port: 3128 }), { host: '192.0.2.1', port: 3128 });
  assert.deepEqual(clientEndpoint({ host: '::ffff:127.0.0.1', port: 1080 }), { host: '127.0.0.1', port: 1080 });
});

test('a template without a slot, or with an unknown one, is refused', () => {
  const t = pacTemplate();
  assert.throws(() => renderPac({ proxy: lo, bypass: [], direct: false }, t.replace('/*@nets6*/ []', '[]')), /missing slot\(s\) \/\*@nets6\*\//);
  assert.throws(() => renderPac({ proxy: lo, bypass: [], direct: false }, `${t}\nvar X = /*@nope*/ 1;\n`), /unknown slot/);
});

test('the unrendered template is valid JavaScript too (it sends everything DIRECT)', () => {
  const raw = readFileSync(new URL('../../../pac/proxy.pac', import.meta.url), 'utf8');
  const ctx: Record<string, unknown> = {};
  new Script(raw).runInNewContext(ctx);
  assert.equal(ctx.PROXY, 'DIRECT');
});

test('config pac.bypass: entries are checked, errors name the key; the defaults are the documented list', () => {
  assert.deepEqual(parseConfig({}).pac, { bypass: [...defaultBypass], direct: false });
  assert.deepEqual(parseConfig({ pac: { bypass: ['<local>', '*.corp', '10.0.0.0/8'] } }).pac.bypass, ['<local>', '*.corp', '10.0.0.0/8']);
  for (const bad of ['two words', 'http://x', '10.0.0.0/40', 'a*b.com']) {
    assert.throws(
      () => parseConfig({ pac: { bypass: [bad] } }, 'f.yaml'),
      (e: unknown) => e instanceof ConfigError && /f\.yaml: pac\.bypass\.0: /.test(e.message),
      bad,
    );
  }
  assert.deepEqual(parseConfig({}).policyRouting, { tableBase: 1100, priority: 31000 });
  assert.throws(() => parseConfig({ policyRouting: { priority: 32766 } }), /policyRouting\.priority/);
});
