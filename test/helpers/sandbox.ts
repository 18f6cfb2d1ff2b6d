// Tests whose destinations are not fully ours (fuzzed requests, unreachable networks) run only
// inside the loopback-only namespace that scripts/run-tests.mjs makes as root. Outside it they
// skip with the reason printed; under CI=true they fail instead.
import { execFileSync } from 'node:child_process';
import type { TestContext } from 'node:test';

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

/**
 * A veth pair (`<name>0`, `<name>1`, 192.0.2.1/24) whose nftables table `<name>` drops every
 * packet to `dst`: a dial there waits for a SYN-ACK that never comes, until its timeout or until
 * it is called off. Both are removed at the test's end, also on failure. In the sandbox only.
 */
export function swallowSyns(t: TestContext, name: string, dst: string): void {
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  ip('link', 'add', `${name}0`, 'type', 'veth', 'peer', 'name', `${name}1`);
  t.after(() => ip('link', 'del', `${name}0`));
  ip('addr', 'add', '192.0.2.1/24', 'dev', `${name}0`);
  ip('link', 'set', `${name}0`, 'up');
  ip('link', 'set', `${name}1`, 'up');
  execFileSync('nft', ['-f', '-'], {
    input: `table inet ${name} {\n chain out {\n  type filter hook output priority 0;\n  ip daddr ${dst} drop\n }\n}\n`,
  });
  t.after(() => execFileSync('nft', ['delete', 'table', 'inet', name]));
}
