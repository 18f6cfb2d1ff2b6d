// Data flows one way (DESIGN.md): the monitor knows nothing of flows, egress nothing of inbounds.
// This reads the compiled sources' import statements, so a wrong import fails here.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const srcRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.js') ? [p] : [];
  });
}

/** The src-relative modules a compiled file imports (type-only imports are gone after tsc). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) {
    out.push(relative(srcRoot, resolve(dirname(file), m[1])));
  }
  for (const m of text.matchAll(/import\(\s*['"](\.[^'"]+)['"]\s*\)/g)) out.push(relative(srcRoot, resolve(dirname(file), m[1])));
  return out;
}

type Rule = { from: string; mustNotImport: string[]; except?: string[] };

const rules: Rule[] = [
  { from: 'net/', mustNotImport: ['flows.js', 'flow.js', 'egress/', 'inbound/', 'observe/', 'app.js'] },
  { from: 'egress/', mustNotImport: ['inbound/', 'observe/', 'app.js', 'flows.js', 'flow.js'] },
  { from: 'flows.js', mustNotImport: ['inbound/', 'egress/', 'observe/', 'app.js'] },
  { from: 'flow.js', mustNotImport: ['inbound/', 'egress/', 'observe/', 'app.js'] },
  { from: 'relay.js', mustNotImport: ['inbound/', 'egress/', 'observe/', 'flows.js', 'flow.js', 'app.js'] },
  { from: 'relay-native.js', mustNotImport: ['inbound/', 'egress/', 'observe/', 'flows.js', 'flow.js', 'app.js'] },
  // one way to dial: inbound handlers get pinned sockets from the connector only (issue 13)
  { from: 'inbound/', mustNotImport: ['egress/dial.js'] },
  { from: 'inbound/socks5.js', mustNotImport: ['net/', 'egress/', 'flows.js', 'relay.js', 'inbound/socks5-session.js'] },
  // the diagnostics channels are a neutral leaf: anyone may publish, it knows nobody
  { from: 'diagnostics.js', mustNotImport: [''] },
  // inbound handlers dial only through the connector (issue 13, item 2); http.js still imports
  // egress/dial.js (blamesPath, its own dial path): that one is the pending test below
  { from: 'inbound/', mustNotImport: ['egress/dial.js'], except: ['inbound/http.js'] },
];

function broken(rs: readonly Rule[]): string[] {
  const all = files(srcRoot);
  assert.ok(all.length > 20, `found ${all.length} compiled modules under ${srcRoot}`);
  const out: string[] = [];
  for (const file of all) {
    const rel = relative(srcRoot, file);
    for (const rule of rs) {
      if (!rel.startsWith(rule.from) || rule.except?.includes(rel)) continue;
      for (const imp of importsOf(file)) {
        if (rule.mustNotImport.some((bad) => imp.startsWith(bad))) out.push(`${rel} imports ${imp}`);
      }
    }
  }
  return out;
}

test('data flows one way: no module imports against the arrows of DESIGN.md', () => {
  assert.deepEqual(broken(rules), []);
});

test('the rules see real imports: a rule that every module breaks is reported', () => {
  assert.ok(broken([{ from: 'flows.js', mustNotImport: ['diagnostics.js'] }]).includes('flows.js imports diagnostics.js'));
});

test('the SOCKS5 codec is pure: no sockets; from node:net only the IP text functions', () => {
  const text = readFileSync(join(srcRoot, 'inbound/socks5.js'), 'utf8');
  assert.doesNotMatch(text, /from\s+['"]node:dgram['"]/);
  const fromNet = [...text.matchAll(/import\s*\{([^}]*)\}\s*from\s+['"]node:net['"]/g)].flatMap((m) => m[1].split(',').map((n) => n.trim()));
  assert.ok(fromNet.length > 0, 'the codec validates IP text with node:net');
  for (const name of fromNet) assert.ok(['isIPv4', 'isIPv6', 'SocketAddress'].includes(name), `the codec imports ${name} from node:net`);
  assert.doesNotMatch(text, /import\s+\*\s+as\s+\w+\s+from\s+['"]node:net['"]|import\s+\w+\s+from\s+['"]node:net['"]/);
});
