// The configuration: defaults, durations, listen addresses, and errors that name the file and the
// key. config/default.yaml documents the defaults and must parse to exactly them.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError,
  defaultConfigPath,
  duration,
  formatHostPort,
  loadConfig,
  parseConfig,
  parseListen,
  type Config,
} from '../../src/config.js';

// The core keys' defaults, spelled out; sections other parts add are checked by their own tests
// (and default.yaml must still parse to exactly parseConfig({}), below).
const coreDefaults: Partial<Config> = {
  listen: [{ host: '127.0.0.1', port: 1080 }],
  log: { level: 'info' },
  dial: { timeout: 10_000, keepAlive: 30_000 },
  grace: 10_000,
  affinity: { mode: 'host', linger: 30_000 },
  fallback: { delay: 300 },
  interfaces: {},
};
const defaults: Config = parseConfig({});
function core(c: Config): Partial<Config> {
  return Object.fromEntries(Object.keys(coreDefaults).map((k) => [k, c[k as keyof Config]])) as Partial<Config>;
}

function tempFile(t: TestContext, name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), `hf${process.pid}-config-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** The ConfigError message thrown by `fn`; fails if it throws anything else or nothing. */
function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.name, 'ConfigError');
    return err.message;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

// ---------------------------------------------------------------------------------------------
// Defaults

test('an empty config gives the defaults', () => {
  assert.deepEqual(core(parseConfig({})), coreDefaults);
  assert.deepEqual(parseConfig(undefined), defaults);
  assert.deepEqual(parseConfig(null), defaults);
});

test('loadConfig of config/default.yaml equals the defaults', () => {
  assert.match(defaultConfigPath, /config[/\\]default\.yaml$/);
  assert.deepEqual(loadConfig(defaultConfigPath), defaults);
  assert.deepEqual(loadConfig(), defaults);
});

test('an empty YAML file gives the defaults', (t) => {
  assert.deepEqual(loadConfig(tempFile(t, 'empty.yaml', '# nothing here\n')), defaults);
});

test('a partial section keeps the defaults of its other keys', () => {
  const c = parseConfig({ dial: { timeout: '5s' }, affinity: { mode: 'off' } });
  assert.deepEqual(c.dial, { timeout: 5000, keepAlive: 30_000 });
  assert.deepEqual(c.affinity, { mode: 'off', linger: 30_000 });
  assert.equal(c.grace, 10_000);
});

// ---------------------------------------------------------------------------------------------
// Durations

test('durations: numbers are milliseconds; ms, s, m and h units', () => {
  const ms = (v: unknown) => duration.parse(v);
  assert.equal(ms(0), 0);
  assert.equal(ms(250), 250);
  assert.equal(ms('300ms'), 300);
  assert.equal(ms('300'), 300);
  assert.equal(ms('10s'), 10_000);
  assert.equal(ms('1.5s'), 1500);
  assert.equal(ms('2m'), 120_000);
  assert.equal(ms('1h'), 3_600_000);
  assert.equal(ms(' 10 s '), 10_000);
});

test('durations in a config file', (t) => {
  const file = tempFile(t, 'd.yaml', 'grace: 2m\ndial:\n  timeout: 300ms\n  keepAlive: 0\nfallback:\n  delay: 50\n');
  const c = loadConfig(file);
  assert.equal(c.grace, 120_000);
  assert.equal(c.dial.timeout, 300);
  assert.equal(c.dial.keepAlive, 0);
  assert.equal(c.fallback.delay, 50);
});

test('bad durations are ConfigErrors naming the key', () => {
  for (const bad of ['10x', 'soon', '-5s', '1d', '']) {
    const msg = configError(() => parseConfig({ grace: bad }, 'x.yaml'));
    assert.match(msg, /^x\.yaml: grace: /, `for ${JSON.stringify(bad)}: ${msg}`);
  }
  assert.match(configError(() => parseConfig({ affinity: { linger: -1 } }, 'x.yaml')), /x\.yaml: affinity\.linger: /);
  assert.match(configError(() => parseConfig({ dial: { timeout: true } }, 'x.yaml')), /x\.yaml: dial\.timeout: /);
});

test('11: every duration and size has a range; out of range is a ConfigError naming the key', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ limits: { handshakeTimeout: 0 } }, /^x\.yaml: limits\.handshakeTimeout: 0 is out of range/],
    [{ limits: { handshakeTimeout: '50ms' } }, /^x\.yaml: limits\.handshakeTimeout: "50ms" is out of range/],
    [{ dial: { timeout: 0 } }, /^x\.yaml: dial\.timeout: /],
    [{ dial: { timeout: '0s' } }, /^x\.yaml: dial\.timeout: /],
    [{ dial: { keepAlive: 10 } }, /^x\.yaml: dial\.keepAlive: /],
    [{ grace: 2 ** 31 }, /^x\.yaml: grace: \d+ is out of range/],
    [{ grace: '25d' }, /^x\.yaml: grace: /],
    [{ limits: { idleTimeout: '600h' } }, /^x\.yaml: limits\.idleTimeout: /],
    [{ udp: { idleTimeout: '30000h' } }, /^x\.yaml: udp\.idleTimeout: /],
    [{ bind: { acceptTimeout: 1e12 } }, /^x\.yaml: bind\.acceptTimeout: /],
    [{ shutdown: { drain: '1000h' } }, /^x\.yaml: shutdown\.drain: /],
    [{ affinity: { linger: '999h' } }, /^x\.yaml: affinity\.linger: /],
    [{ fallback: { delay: 2 ** 32 } }, /^x\.yaml: fallback\.delay: /],
    [{ relay: { offloadAfter: '2048GiB' } }, /^x\.yaml: relay\.offloadAfter: /],
    [{ limits: { maxFlows: 0 } }, /^x\.yaml: limits\.maxFlows: /],
    [{ limits: { maxFlows: 1e9 } }, /^x\.yaml: limits\.maxFlows: /],
    [{ limits: { maxFlowsPerClient: 1e9 } }, /^x\.yaml: limits\.maxFlowsPerClient: /],
  ];
  for (const [raw, re] of cases) assert.match(configError(() => parseConfig(raw, 'x.yaml')), re, JSON.stringify(raw));
  // the edges are fine: 0 where it means "off", the largest timer, a day
  const c = parseConfig({
    grace: 0,
    dial: { timeout: '100ms', keepAlive: 0 },
    limits: { idleTimeout: 2 ** 31 - 1, handshakeTimeout: '24h' },
    udp: { idleTimeout: 0 },
    bind: { acceptTimeout: 0 },
    relay: { offloadAfter: '1024GiB' },
  });
  assert.equal(c.limits.idleTimeout, 2 ** 31 - 1);
  assert.equal(c.dial.timeout, 100);
  assert.equal(c.relay.offloadAfter, 2 ** 40);
});

test('11: a reload with an out-of-range value is rejected naming the key (the file is read again)', (t) => {
  const file = tempFile(t, 'reload.yaml', 'limits:\n  handshakeTimeout: 0\n');
  assert.match(configError(() => loadConfig(file)), /reload\.yaml: limits\.handshakeTimeout: 0 is out of range/);
});

// ---------------------------------------------------------------------------------------------
// Unknown keys and other errors

test('an unknown top-level key: ConfigError naming the key and the file', (t) => {
  const file = tempFile(t, 'unknown.yaml', 'listen:\n  - 127.0.0.1:1080\ngrase: 5s\n');
  const msg = configError(() => loadConfig(file));
  assert.ok(msg.includes(file), msg);
  assert.match(msg, /"grase"/);
});

test('an unknown nested key: ConfigError naming its section', (t) => {
  const file = tempFile(t, 'nested.yaml', 'dial:\n  timeuot: 5s\n');
  const msg = configError(() => loadConfig(file));
  assert.ok(msg.startsWith(`${file}: dial: `), msg);
  assert.match(msg, /"timeuot"/);
});

test('a bad enum value names its key', () => {
  assert.match(configError(() => parseConfig({ log: { level: 'verbose' } }, 'x.yaml')), /^x\.yaml: log\.level: /);
  assert.match(configError(() => parseConfig({ affinity: { mode: 'sticky' } }, 'x.yaml')), /^x\.yaml: affinity\.mode: /);
});

test('bad listen addresses: ConfigError naming the list entry', () => {
  const msg = configError(() => parseConfig({ listen: ['127.0.0.1:1080', 'localhost'] }, 'x.yaml'));
  assert.match(msg, /^x\.yaml: listen\.1: /);
  assert.match(msg, /"localhost"/);
  assert.match(configError(() => parseConfig({ listen: [] }, 'x.yaml')), /^x\.yaml: listen: /);
  assert.match(configError(() => parseConfig({ listen: '127.0.0.1:1080' }, 'x.yaml')), /^x\.yaml: listen: /);
});

test('a missing file and a YAML syntax error are ConfigErrors naming the file', (t) => {
  const missing = join(tmpdir(), `hf${process.pid}-no-such-dir`, 'none.yaml');
  assert.ok(configError(() => loadConfig(missing)).startsWith(`${missing}: cannot read`));
  const broken = tempFile(t, 'broken.yaml', 'dial: [unclosed\n');
  assert.ok(configError(() => loadConfig(broken)).startsWith(`${broken}: not valid YAML`));
});

// ---------------------------------------------------------------------------------------------
// parseListen / formatHostPort

test('parseListen: IPv4, names, bracketed IPv6 and ":port" (all addresses)', () => {
  assert.deepEqual(parseListen('127.0.0.1:1080'), { host: '127.0.0.1', port: 1080 });
  assert.deepEqual(parseListen('localhost:8080'), { host: 'localhost', port: 8080 });
  assert.deepEqual(parseListen('[::1]:1080'), { host: '::1', port: 1080 });
  assert.deepEqual(parseListen('[fe80::1%eth0]:1080'), { host: 'fe80::1%eth0', port: 1080 });
  assert.deepEqual(parseListen(':1080'), { host: '0.0.0.0', port: 1080 });
  assert.deepEqual(parseListen(' 127.0.0.1:65535 '), { host: '127.0.0.1', port: 65535 });
  assert.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 }, 'port 0: any free port');
});

test('parseListen: bad ports and shapes', () => {
  for (const bad of [
    '127.0.0.1:65536',
    '127.0.0.1:99999',
    '127.0.0.1:123456',
    '127.0.0.1:',
    '127.0.0.1:http',
    '127.0.0.1:-1',
    '127.0.0.1',
    '::1:1080',
    '[::1]',
    '[::1:1080',
    '',
  ]) {
    assert.equal(parseListen(bad), undefined, JSON.stringify(bad));
  }
});

test('formatHostPort brackets IPv6 and round-trips through parseListen', () => {
  assert.equal(formatHostPort('::1', 1080), '[::1]:1080');
  assert.equal(formatHostPort('127.0.0.1', 1080), '127.0.0.1:1080');
  assert.equal(formatHostPort('example.com', 443), 'example.com:443');
  for (const [host, port] of [['::1', 1], ['10.0.0.1', 65535], ['example.com', 80]] as const) {
    assert.deepEqual(parseListen(formatHostPort(host, port)), { host, port });
  }
});
