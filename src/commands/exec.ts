// `holdfast exec -- CMD ARGS...`: run one command with the proxy variables set; its exit code
// (or its signal) becomes ours.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { defaultConfigPath } from '../config.js';
import { proxyEnv } from '../system/env.js';
import { fail, loadTargetOr, parseCommand, targetOptions } from './common.js';

export const help = `Usage: holdfast exec [--config FILE] [--listen HOST:PORT] -- CMD [ARGS...]

Run CMD with http_proxy, https_proxy, all_proxy, no_proxy (and upper-case twins) pointing at
holdfast, as \`holdfast env\` prints them. Exits with CMD's exit code; if CMD dies of a signal,
holdfast re-raises it (or exits 128+n where it cannot). SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are
passed on to CMD; so are SIGINT and SIGQUIT unless a terminal sends them to both already.

Options:
  -c, --config FILE       configuration file (YAML); default: ${defaultConfigPath}
  -l, --listen HOST:PORT  point at this listener instead of the config's first one
  -h, --help              show this help

Examples:
  holdfast exec -- curl https://example.org/
  holdfast exec --listen 127.0.0.1:1090 -- git clone https://example.org/repo.git
`;

const forwarded = ['SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGINT', 'SIGQUIT'] as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
        ...targetOptions,
    },
    true,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  if (positionals.length === 0) return fail(`exec: no command given\n\n${help}`);
  const target = loadTargetOr(values);
  if (typeof target === 'number') return target;
  const [cmd, ...args] = positionals;
  const env = { ...process.env, ...proxyEnv(target.endpoint, target.cfg.pac.bypass) };
  // A terminal's Ctrl-C / Ctrl-\ reach the child's process group already: pass those two on only
  // when no terminal is involved (kill -INT from another process). The handlers go in before the
  // child starts, so that no signal falls between its start and our handlers (Node loads its
  // signal machinery lazily, and a signal with no handler yet would kill us). Handlers run on the
  // event loop, so by the time one runs, the child exists.
  const fromTerminal = process.stdin.isTTY === true;
  let child: ChildProcess | undefined;
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const sig of forwarded) {
    const h = () => {
      if ((sig === 'SIGINT' || sig === 'SIGQUIT') && fromTerminal) return;
      if (child && child.exitCode === null && child.signalCode === null) child.kill(sig);
    };
    handlers.set(sig, h);
    process.on(sig, h);
  }
  child = spawn(cmd, args, { stdio: 'inherit', env });
  const unhook = () => {
    for (const [sig, h] of handlers) process.removeListener(sig, h);
  };

  const started = child;
  return new Promise<number>((resolve) => {
    started.once('error', (err: NodeJS.ErrnoException) => {
      unhook();
      process.stderr.write(`holdfast: exec: ${cmd}: ${err.code === 'ENOENT' ? 'command not found' : err.message}\n`);
      resolve(err.code === 'ENOENT' ? 127 : 126);
    });
    started.once('exit', (code, signal) => {
      unhook();
      if (signal === null) return resolve(code ?? 1);
      const n = constants.signals[signal] ?? 0;
      // Die of the same signal, so that our parent sees what happened; SIGPIPE and others Node
      // ignores (or that are caught elsewhere) cannot be re-raised: 128+n, as shells report it.
      try {
        process.kill(process.pid, signal);
      } catch {
        /* fall through */
      }
      resolve(128 + n);
    });
  });
}
