// Builds the native addon (SO_BINDTODEVICE). A failure is not fatal: holdfast then runs with
// source-address binding only, and the start-up warning / `holdfast doctor` say how to fix it.
// Run by `npm ci` (install script); by hand: `node scripts/build-addon.mjs`.
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** node-gyp: the one npm hands to install scripts, else the one bundled with npm, else PATH. */
function findNodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  try {
    const npmCli = realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim());
    candidates.push(join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  } catch {
    /* no npm on PATH */
  }
  const found = candidates.find((c) => c && existsSync(c));
  return found ? [process.execPath, [found, 'rebuild']] : ['node-gyp', ['rebuild']];
}

const [cmd, args] = findNodeGyp();
// Headers: npm passes its nodedir setting; by hand, use the running Node's own headers if it
// ships them (no download: this may run offline).
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${prefix}`);
}
const r = spawnSync(cmd, args, { stdio: 'inherit' });
if (r.status !== 0) {
  console.warn(
    'holdfast: the native addon did not build (' + (r.error?.message ?? `exit ${r.status}`) + ').\n' +
    '  holdfast will run, but flows are pinned by source address only, which does not hold them\n' +
    '  across route changes unless policy routing is set up. Install a C compiler and python3\n' +
    '  (Debian: apt-get install build-essential python3) and run `npm rebuild holdfast`.',
  );
}
