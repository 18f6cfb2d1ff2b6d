// Runs every compiled test file under dist/test, listed explicitly (Node 20 expands no globs;
// Node 22+ would run a directory argument as a file). Extra arguments: file name filters, and
// flags passed to `node --test`.
//
// As root, the whole run happens inside a fresh network namespace that has only loopback, with
// /etc/netns/<ns>/resolv.conf pointing at 127.0.0.1: a proxy dials whatever it is asked to, and
// nothing a test makes holdfast resolve or dial may leave the machine. Tests see
// HOLDFAST_SANDBOX=1 there. The lab tests build their own namespaces from inside it.
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

function find(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const only = args.filter((a) => !a.startsWith('-'));
const flags = args.filter((a) => a.startsWith('-'));
let files = find('dist/test').sort();
if (only.length) files = files.filter((f) => only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error('run-tests: no test files found under dist/test');
  process.exit(1);
}
const nodeArgs = ['--test', '--test-concurrency=1', '--test-timeout=300000', ...flags, ...files.map((f) => resolve(f))];

const ns = `hf${process.pid}sb`;
let sandboxed = false;
function cleanup() {
  if (!sandboxed) return;
  sandboxed = false;
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {}
  rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
}

let why;
if (process.getuid?.() !== 0) why = 'not root';
else {
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe' });
    sandboxed = true;
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { stdio: 'pipe' });
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'nameserver 127.0.0.1\n');
    writeFileSync(`/etc/netns/${ns}/hosts`, '127.0.0.1 localhost\n::1 localhost ip6-localhost\n');
  } catch (err) {
    why = `cannot make a network namespace: ${err.stderr?.toString().trim() || err.message}`;
    cleanup();
  }
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130); });

let r;
if (sandboxed) {
  console.log(`run-tests: running ${files.length} files inside network namespace ${ns} (loopback only)`);
  r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, ...nodeArgs], {
    stdio: 'inherit',
    env: { ...process.env, HOLDFAST_SANDBOX: '1', HOLDFAST_SANDBOX_NS: ns },
  });
} else {
  console.log(`run-tests: no sandbox namespace (${why}); tests that need one will skip${process.env.CI === 'true' ? ' (and fail, since CI=true)' : ''}`);
  r = spawnSync(process.execPath, nodeArgs, { stdio: 'inherit', env: { ...process.env, HOLDFAST_SANDBOX_WHY: why } });
}
cleanup();
process.exit(r.status ?? 1);
