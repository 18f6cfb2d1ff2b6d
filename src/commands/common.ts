// Small helpers shared by the subcommands.

/** Print `holdfast: msg` on stderr; returns the usage-error exit code (2). */
export function fail(msg: string): number {
  process.stderr.write(`holdfast: ${msg}\n`);
  return 2;
}
