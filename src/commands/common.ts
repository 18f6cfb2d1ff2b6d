// Small helpers shared by the subcommands.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config.js';
import { loadTarget, type ProxyTarget } from '../system/env.js';

/** Print `holdfast: msg` on stderr; returns the usage-error exit code (2). */
export function fail(msg: string): number {
  process.stderr.write(`holdfast: ${msg}\n`);
  return 2;
}

type Options = NonNullable<ParseArgsConfig['options']>;
const helpOption = { help: { type: 'boolean', short: 'h' } } as const;

/**
 * Parse a subcommand's flags (strict; `-h/--help` added). Returns the parsed values, or the exit
 * code when there is nothing more to do: 0 after printing `help`, 2 after a usage error.
 */
export function parseCommand<const O extends Options>(argv: string[], help: string, options: O, allowPositionals = false) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, ...helpOption }, strict: true, allowPositionals });
  } catch (err) {
    return fail(`${(err as Error).message}\n\n${help}`);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(help);
    return 0;
  }
  return parsed;
}

/**
 * The flags of the commands that run a holdfast (start, and service which writes them into the
 * service file): config, listeners (repeatable), the desktop setting, policy routing, MPTCP.
 */
export const runOptions = {
  config: { type: 'string', short: 'c' },
  listen: { type: 'string', short: 'l', multiple: true },
  'system-proxy': { type: 'boolean' },
  'system-proxy-mode': { type: 'string' },
  'policy-routing': { type: 'boolean' },
  mptcp: { type: 'boolean' },
} as const;

/** The `--config FILE` and `--listen HOST:PORT` flags of the commands that point at a holdfast. */
export const targetOptions = {
  config: { type: 'string', short: 'c' },
  listen: { type: 'string', short: 'l' },
} as const;

/**
 * The config and the listener those flags name; on a bad config or `--listen`, prints the error
 * and returns the usage-error exit code (2).
 */
export function loadTargetOr(values: { config?: string; listen?: string }): ProxyTarget | number {
  try {
    return loadTarget(values);
  } catch (err) {
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
}
