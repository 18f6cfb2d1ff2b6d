// The quoting of service files (issue 16): a path with spaces, quotes, `%` or `$` reaches holdfast
// as one argument under systemd (systemd.service(5) "Command lines": specifiers and variables are
// expanded, so `%` and `$` are doubled) and under Windows (CommandLineToArgvW rules).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchdPlist, startArgs, systemdUnit, systemdWord, windowsArg } from '../../src/system/service-files.js';

test('systemdWord: plain words stay, others are double-quoted with \\ and " escaped, % and $ doubled', () => {
  assert.equal(systemdWord('/usr/bin/node'), '/usr/bin/node');
  assert.equal(systemdWord('/home/ada/My Files/cli.js'), '"/home/ada/My Files/cli.js"');
  assert.equal(systemdWord('/opt/100%/x'), '/opt/100%%/x');
  assert.equal(systemdWord('/opt/$HOME/x'), '/opt/$$HOME/x');
  assert.equal(systemdWord('a "b" c\\d'), '"a \\"b\\" c\\\\d"');
});

test('windowsArg: CommandLineToArgvW quoting (backslashes doubled only before a quote or the closing quote)', () => {
  assert.equal(windowsArg('C:\\hf\\cli.js'), 'C:\\hf\\cli.js');
  assert.equal(windowsArg('C:\\Program Files\\nodejs\\node.exe'), '"C:\\Program Files\\nodejs\\node.exe"');
  assert.equal(windowsArg('C:\\a dir\\'), '"C:\\a dir\\\\"');
  assert.equal(windowsArg('say "hi"'), '"say \\"hi\\""');
  assert.equal(windowsArg(''), '""');
});

test('startArgs: --system-proxy, its mode and --policy-routing pass through; manual is the default', () => {
  const base = { node: '/n', cli: '/c' };
  assert.deepEqual(startArgs(base), ['start']);
  assert.deepEqual(startArgs({ ...base, config: '/etc/hf.yaml', listen: [{ host: '::1', port: 1090 }], systemProxy: true, systemProxyMode: 'pac', policyRouting: true }), [
    'start', '--config', '/etc/hf.yaml', '--listen', '[::1]:1090', '--system-proxy', '--system-proxy-mode', 'pac', '--policy-routing',
  ]);
  assert.deepEqual(startArgs({ ...base, systemProxyMode: 'pac' }), ['start'], 'no mode without --system-proxy');
  assert.deepEqual(startArgs({ ...base, mptcp: true }), ['start', '--mptcp'], '--mptcp passes through');
  assert.match(systemdUnit({ ...base, env: { XDG_CURRENT_DESKTOP: 'KDE' } }), /^Environment=XDG_CURRENT_DESKTOP=KDE$/m);
  assert.match(launchdPlist({ ...base, config: '/a&b<c>.yaml' }), /<string>\/a&amp;b&lt;c&gt;\.yaml<\/string>/);
});
