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

const rules: { from: string; mustNotImport: string[] }[] = [
  { from: 'net/', mustNotImport: ['flows.js', 'egress/', 'inbound/', 'observe/', 'app.js'] },
  { from: 'egress/', mustNotImport: ['inbound/', 'observe/', 'app.js', 'flows.js'] },
  { from: 'flows.js', mustNotImport: ['inbound/', 'egress/', 'app.js'] },
  { from: 'relay.js', mustNotImport: ['inbound/', 'egress/', 'flows.js', 'app.js'] },
  // one way to dial: inbound handlers get pinned sockets from the connector only (issue 13)
  { from: 'inbound/', mustNotImport: ['egress/dial.js'] },
  { from: 'inbound/socks5.js', mustNotImport: ['net/', 'egress/', 'flows.js', 'relay.js', 'inbound/socks5-session.js'] },
];

test('data flows one way: no module imports against the arrows of DESIGN.md', () => {
  const all = files(srcRoot);
  assert.ok(all.length > 20, `found ${all.length} compiled modules under ${srcRoot}`);
  const broken: string[] = [];
  for (const file of all) {
    const rel = relative(srcRoot, file);
    for (const rule of rules) {
      if (!rel.startsWith(rule.from)) continue;
      for (const imp of importsOf(file)) {
        if (rule.mustNotImport.some((bad) => imp.startsWith(bad))) broken.push(`${rel} imports ${imp}`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

test('the SOCKS5 codec imports nothing from node:net (it is pure)', () => {
  const text = readFileSync(join(srcRoot, 'inbound/socks5.js'), 'utf8');
  assert.doesNotMatch(text, /from\s+['"]node:(net|dgram)['"]/);
});
