// `holdfast doctor`: check that this host can hold sessions, with a one-line fix for each problem.
import { ConfigError, defaultConfigPath, loadConfig, parseListen, type Config, type ListenAddress } from '../config.js';
import { formatReport, runDoctor } from '../doctor.js';
import { RoleBook } from '../egress/roles.js';
import { InterfaceFactsCache } from '../net/iftype.js';
import { clientEndpoint } from '../pac.js';
import { fail, parseCommand } from './common.js';

export const help = `Usage: holdfast doctor [--json] [--config FILE] [--listen HOST:PORT]...

Check whether this host can hold sessions (a flow stays on its interface when the routes change),
and say how to fix what is missing:
  addon, binding   the native addon loads and binds a socket to a device (SO_BINDTODEVICE)
  interface:NAME   addresses, carrier, default routes (from holdfast's network monitor); type,
                   metered and role under the config (interfaces.<name>.role, types, metered)
  rp_filter        strict reverse-path filtering (1) drops the replies of a pinned flow whose
                   interface is no longer the best route: the flow stalls
  policy-routing   rules \`from <address> lookup <table>\` (holdfast start --policy-routing)
  ipv6             IPv6 state (and firewalld's IPv6 reverse-path filter)
  mptcp            MPTCP enabled, a \`subflow\` endpoint per usable address and limits to match
                   (what \`mptcp: on\` needs to move a flow off a lost interface)
  listener:H:P     holdfast answers GET /status there
  env, system-proxy  whether this shell's proxy variables and the desktop setting point at holdfast
  system-proxy-answers  warns when the desktop points at a holdfast that does not answer (it died
                   while --system-proxy held the setting): apps that follow it have no network

Exit status: 0 when the host can hold sessions, 1 when it cannot, 2 on bad usage.

Options:
      --json              the report as JSON
  -c, --config FILE       configuration file (YAML); default: ${defaultConfigPath}
  -l, --listen HOST:PORT  check this listener instead of the config's (repeatable)
      --no-system-proxy   skip reading the desktop's proxy setting
  -h, --help              show this help
`;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
        json: { type: 'boolean' },
        config: { type: 'string', short: 'c' },
        listen: { type: 'string', short: 'l', multiple: true },
        'no-system-proxy': { type: 'boolean' },
    },
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  let listen: readonly ListenAddress[];
  let cfg: Config;
  try {
    cfg = loadConfig(values.config ?? defaultConfigPath);
    listen = cfg.listen;
  } catch (err) {
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
  if (values.listen?.length) {
    const l: ListenAddress[] = [];
    for (const s of values.listen) {
      const a = parseListen(s);
      if (!a) return fail(`--listen ${s}: expected HOST:PORT (IPv6 as [::1]:1080)`);
      l.push(a);
    }
    listen = l;
  }
  // types from sysfs, metered from NetworkManager (where it runs), roles from the config
  const facts = new InterfaceFactsCache();
  await facts.refresh();
  const roles = new RoleBook({ interfaces: cfg.interfaces, types: cfg.types, metered: cfg.metered }, facts);
  const report = await runDoctor({
    listeners: listen.map(clientEndpoint),
    systemProxy: !values['no-system-proxy'],
    placementOf: (i) => roles.placementOf(i),
  });
  process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
  return report.canHoldSessions ? 0 : 1;
}
