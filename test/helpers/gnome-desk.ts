// A GNOME desktop for tests: Debian's gsettings with the keyfile backend in a temporary HOME (no
// session bus), and the holdfast CLI run against it. Used by the system-proxy tests.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { onPath } from '../../src/system/proxy.js';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
export const S = 'org.gnome.system.proxy';

/** Why the GNOME tests cannot run here (printed), or undefined; with CI=true a reason throws. */
export function gnomeSkipReason(): string | undefined {
  let why: string | undefined;
  if (!onPath('gsettings')) why = 'needs gsettings (apt install libglib2.0-bin)';
  else if (spawnSync('gsettings', ['list-keys', S], { env: { ...process.env, GSETTINGS_BACKEND: 'memory' } }).status !== 0)
    why = `needs the ${S} schema (apt install gsettings-desktop-schemas)`;
  if (!why) return undefined;
  if (process.env.CI === 'true') throw new Error(`CI=true but the GNOME test ${why}`);
  console.log(`# skip: ${why}`);
  return why;
}

export interface Desk {
  env: NodeJS.ProcessEnv;
  /** holdfast's saved copy of the user's settings */
  state: string;
  gs(...args: string[]): string;
  snapshot(): string;
  cli(...args: string[]): { code: number | null; stdout: string; stderr: string };
}

/** A temporary HOME with a keyfile GSettings backend, removed after the test. */
export function gnomeDesk(t: TestContext, tag: string, currentDesktop = 'GNOME'): Desk {
  const home = mkdtempSync(join(tmpdir(), `hf${process.pid}-${tag}-`));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_STATE_HOME: join(home, '.local', 'state'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    GSETTINGS_BACKEND: 'keyfile',
    XDG_CURRENT_DESKTOP: currentDesktop,
  };
  const gs = (...args: string[]) => {
    const r = spawnSync('gsettings', args, { env, encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, `gsettings ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  return {
    env,
    state: join(home, '.local', 'state', 'holdfast', 'system-proxy.json'),
    gs,
    snapshot: () => gs('list-recursively', S),
    cli: (...args) => {
      const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 20_000 });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    },
  };
}
