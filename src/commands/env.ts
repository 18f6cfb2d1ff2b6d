// `holdfast env`: print the lines that point a shell's applications at holdfast.
import { defaultConfigPath } from '../config.js';
import { allProxyVarNames, defaultShell, formatEnv, formatUnset, proxyEnv, shells, type Shell } from '../system/env.js';
import { fail, loadTargetOr, parseCommand, targetOptions } from './common.js';

export const help = `Usage: holdfast env [--shell sh|fish|powershell|cmd] [--unset] [--config FILE] [--listen HOST:PORT]

Print lines that set http_proxy and https_proxy (http://HOST:PORT), all_proxy
(socks5h://HOST:PORT: names are resolved by holdfast), no_proxy (the config's pac.bypass list)
and their upper-case twins, pointing at the config's first listener (or --listen).

Options:
  -s, --shell SHELL       sh (bash, zsh, dash...), fish, powershell or cmd
                          (default: powershell on Windows, fish if $SHELL is fish, else sh)
  -u, --unset             print lines that remove the variables instead
  -c, --config FILE       configuration file (YAML); default: ${defaultConfigPath}
  -l, --listen HOST:PORT  point at this listener instead of the config's first one
  -h, --help              show this help

Examples:
  eval "$(holdfast env)"                       # bash, zsh
  holdfast env --shell fish | source           # fish
  holdfast env --shell powershell | Invoke-Expression
  holdfast exec -- curl https://example.org/   # one command only
`;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
        shell: { type: 'string', short: 's' },
        unset: { type: 'boolean', short: 'u' },
        ...targetOptions,
    },
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const shell = (values.shell ?? defaultShell()) as Shell;
  if (!shells.includes(shell)) return fail(`--shell ${values.shell}: expected one of ${shells.join(', ')}`);
  if (values.unset) {
    process.stdout.write(formatUnset(allProxyVarNames(), shell));
    return 0;
  }
  const target = loadTargetOr(values);
  if (typeof target === 'number') return target;
  process.stdout.write(formatEnv(proxyEnv(target.endpoint, target.cfg.pac.bypass), shell));
  return 0;
}
