// `holdfast start`: run the proxy until SIGINT/SIGTERM.
import { parseArgs } from 'node:util';
import { startHoldfast } from '../app.js';
import { ConfigError, defaultConfigPath, loadConfig, parseListen, type ListenAddress } from '../config.js';
import { createLogger, logLevels } from '../log.js';
import { fail } from './common.js';

export const help = `Usage: holdfast start [--config FILE] [--listen HOST:PORT]... [--log-level LEVEL]

Run the proxy. Each listener serves SOCKS5 (RFC 1928) and HTTP proxy (CONNECT and plain
http:// forwarding) on the same port. GET /status on a listener returns the interfaces and the
live flows as JSON.

Options:
  -c, --config FILE       configuration file (YAML); default: the embedded
                          ${defaultConfigPath}
  -l, --listen HOST:PORT  listen here instead of the config's listeners; repeat for more
                          (IPv6 as [::1]:1080)
      --log-level LEVEL   ${logLevels.join(' | ')} (default: the config's, info)
  -h, --help              show this help

Logs are JSON lines on stdout (pipe through pino-pretty to read them).
Stop with Ctrl-C (SIGINT) or SIGTERM: listeners close, flows get shutdown.drain (default 5 s)
to finish, the rest are cut; a second signal exits at once. SIGHUP reloads the config file
(listeners, auth, limits, policy) without dropping live flows; a bad file is rejected with the
reason in the log and the old configuration stays.

Examples:
  holdfast start
  holdfast start --listen 127.0.0.1:1090 --listen [::1]:1090
  curl --socks5-hostname 127.0.0.1:1080 https://example.org/
  curl -x http://127.0.0.1:1080 http://example.org/
`;

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        listen: { type: 'string', short: 'l', multiple: true },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    return fail(`${(err as Error).message}\n\n${help}`);
  }
  if (values.help) {
    process.stdout.write(help);
    return 0;
  }
  const listenOverride: ListenAddress[] = [];
  for (const l of values.listen ?? []) {
    const a = parseListen(l);
    if (!a) return fail(`--listen ${l}: expected HOST:PORT (IPv6 as [::1]:1080)`);
    listenOverride.push(a);
  }
  const configFile = values.config ?? defaultConfigPath;
  /** The config file, with --listen applied; read at start and again on SIGHUP. */
  const readConfig = () => {
    const c = loadConfig(configFile);
    return listenOverride.length ? { ...c, listen: listenOverride } : c;
  };
  let cfg;
  try {
    cfg = readConfig();
  } catch (err) {
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
  const level = values['log-level'] ?? cfg.log.level;
  if (!(logLevels as readonly string[]).includes(level)) {
    return fail(`--log-level ${level}: expected one of ${logLevels.join(', ')}`);
  }
  const log = createLogger(level as (typeof logLevels)[number]);
  let hf;
  try {
    hf = await startHoldfast(cfg, { log });
  } catch (err) {
    log.fatal({ err }, 'start failed');
    log.flush();
    process.stderr.write(`holdfast: ${(err as Error).message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
  let drainMs = cfg.shutdown.drain;
  const reload = async () => {
    let next;
    try {
      next = readConfig();
      await hf.reload(next);
    } catch (err) {
      // the old configuration stays in force
      log.error({ file: configFile, why: (err as Error).message }, 'reload rejected');
      return;
    }
    drainMs = next.shutdown.drain;
    if (!values['log-level']) log.level = next.log.level;
    log.info({ file: configFile, flows: hf.flows.size }, 'reloaded');
  };
  process.on('SIGHUP', () => void reload());
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(130);
        return;
      }
      stopping = true;
      log.info({ signal, flows: hf.flows.size, drainMs }, 'stopping');
      hf.close(drainMs).then(
        () => {
          log.info('stopped');
          resolve(0);
        },
        (err) => {
          log.error({ err }, 'stop failed');
          resolve(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

