// Tests whose destinations are not fully ours (fuzzed requests, unreachable networks) run only
// inside the loopback-only namespace that scripts/run-tests.mjs makes as root. Outside it they
// skip with the reason printed; under CI=true they fail instead.
import { execFileSync } from 'node:child_process';

export function sandboxSkip(): string | undefined {
  if (process.env.HOLDFAST_SANDBOX === '1') return undefined;
  const why = `needs the loopback-only test namespace (${process.env.HOLDFAST_SANDBOX_WHY ?? 'run via npm test as root'})`;
  if (process.env.CI === 'true') throw new Error(`CI=true but ${why}`);
  process.stdout.write(`# skip: ${why}\n`);
  return why;
}

/** Run a command inside the sandbox namespace (we are in it already). */
export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
