// Builds the native addon (SO_BINDTODEVICE). A failure is not fatal: holdfast then runs with
// source-address binding only, and `holdfast doctor` / the start-up warning say how to fix it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp && existsSync(gyp)
  ? [process.execPath, [gyp, 'rebuild']]
  : ['node-gyp', ['rebuild']];
const r = spawnSync(cmd, args, { stdio: 'inherit' });
if (r.status !== 0) {
  console.warn(
    'holdfast: the native addon did not build (' + (r.error?.message ?? `exit ${r.status}`) + ').\n' +
    '  holdfast will run, but flows are pinned by source address only, which does not hold them\n' +
    '  across route changes unless policy routing is set up. Install a C compiler and python3\n' +
    '  (Debian: apt-get install build-essential python3) and run `npm rebuild holdfast`.',
  );
}
