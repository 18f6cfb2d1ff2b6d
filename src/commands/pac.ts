// `holdfast pac`: print the PAC file, the same one GET /proxy.pac serves.
import { defaultConfigPath } from '../config.js';
import { renderPac } from '../pac.js';
import { loadTargetOr, parseCommand, targetOptions } from './common.js';

export const help = `Usage: holdfast pac [--config FILE] [--listen HOST:PORT]

Print the proxy auto-config (PAC) file: everything through holdfast (PROXY, then SOCKS5 on the
same port; then DIRECT only if the config's pac.direct is true), except the bypass list
(pac.bypass: localhost, loopback, *.local, private and link-local ranges by default, and the
listener itself). A running holdfast serves the same file at http://HOST:PORT/proxy.pac,
pointing at the listener the request came in on.

Options:
  -c, --config FILE       configuration file (YAML); default: ${defaultConfigPath}
  -l, --listen HOST:PORT  point at this listener instead of the config's first one
  -h, --help              show this help

Examples:
  holdfast pac > ~/.config/holdfast.pac
  chromium --proxy-pac-url=http://127.0.0.1:1080/proxy.pac
`;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
        ...targetOptions,
    },
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const target = loadTargetOr(values);
  if (typeof target === 'number') return target;
  process.stdout.write(renderPac({ proxy: target.endpoint, bypass: target.cfg.pac.bypass, direct: target.cfg.pac.direct }));
  return 0;
}
