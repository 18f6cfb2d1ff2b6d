// `holdfast start`: run the proxy until SIGINT/SIGTERM.
import { startHoldfast } from '../app.js';
import { ConfigError, defaultConfigPath, loadConfig, parseListen, type ListenAddress } from '../config.js';
import { takeListenFds } from '../inbound/activation.js';
import { createLogger, logLevels } from '../log.js';
import { clientEndpoint } from '../pac.js';
import { startMptcpEndpoints, type MptcpEndpoints } from '../system/mptcp-endpoints.js';
import { startPolicyRouting, type PolicyRouting } from '../system/policy-routing.js';
import { holdSystemProxy } from '../system/proxy.js';
import { fail, parseCommand, runOptions } from './common.js';

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
      --system-proxy      point the desktop's proxy setting at holdfast while it runs
                          (restored at exit; see holdfast system-proxy --help)
      --system-proxy-mode manual | pac (default: manual)
      --policy-routing    keep a routing table per interface and rules \`from <address> lookup
                          <table>\` while it runs (needs CAP_NET_ADMIN): flows hold even with
                          strict rp_filter or without the addon; removed at exit
      --mptcp             upstream sockets as MPTCP where the kernel and the server have it
                          (config: mptcp: on); with CAP_NET_ADMIN also one \`subflow backup\`
                          MPTCP endpoint per usable address, removed at exit. A tunnel whose
                          interface dies moves to a live subflow instead of being cut
  -h, --help              show this help

Socket activation: started with LISTEN_FDS/LISTEN_PID (a systemd socket unit, see holdfast
service --help, or \`systemd-socket-activate -l 127.0.0.1:1080 holdfast start\`), holdfast serves
SOCKS5 and HTTP on the sockets it was handed and opens none of its own (--listen and listen: are
ignored; the open-proxy check applies to the handed addresses).

Logs are JSON lines on stdout (pipe through pino-pretty to read them).
Stop with Ctrl-C (SIGINT) or SIGTERM: listeners close, flows get shutdown.drain (default 5 s)
to finish, the rest are cut; a second signal exits at once. SIGHUP reloads the config file
without dropping or moving live flows: listen, auth, clients, limits, dial, dns, fallback,
affinity, grace, udp, bind, relay, pac, shutdown, roles, types, metered and rules apply to new
flows (log, interfaces' dns and policyRouting need a restart); a bad file is rejected with the
reason in the log and the old configuration stays.

Examples:
  holdfast start
  holdfast start --listen 127.0.0.1:1090 --listen [::1]:1090
  curl --socks5-hostname 127.0.0.1:1080 https://example.org/
  curl -x http://127.0.0.1:1080 http://example.org/
`;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
      ...runOptions,
      'log-level': { type: 'string' },
    },
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
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
    const m = values.mptcp ? { ...c, mptcp: 'on' as const } : c;
    return listenOverride.length ? { ...m, listen: listenOverride } : m;
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
  const proxyMode = values['system-proxy-mode'] ?? 'manual';
  if (proxyMode !== 'manual' && proxyMode !== 'pac') return fail(`--system-proxy-mode ${proxyMode}: expected manual or pac`);
  const log = createLogger(level as (typeof logLevels)[number]);
  let hf;
  try {
    const activated = takeListenFds();
    if (activated.length && values.listen?.length) log.warn({ fds: activated.length }, 'socket activation: --listen is ignored, serving on the handed sockets');
    hf = await startHoldfast(cfg, { log, activated });
  } catch (err) {
    log.fatal({ err }, 'start failed');
    log.flush();
    process.stderr.write(`holdfast: ${(err as Error).message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
  // --policy-routing and --system-proxy: on now, undone at exit (the system proxy first, the
  // routing rules after the flows that rely on them are gone)
  let policyRouting: PolicyRouting | undefined;
  let mptcpEndpoints: MptcpEndpoints | undefined;
  let restoreProxy: (() => void) | undefined;
  // leave the system as found: endpoints and routing rules go after the flows that use them
  const undoSystem = async () => {
    await mptcpEndpoints?.close();
    await policyRouting?.close();
  };
  try {
    if (values['policy-routing']) policyRouting = await startPolicyRouting(hf.monitor, { ...cfg.policyRouting, log });
    if (cfg.mptcp === 'on' && process.platform === 'linux') mptcpEndpoints = await startMptcpEndpoints(hf.monitor, { log });
    if (values['system-proxy']) {
      const endpoint = clientEndpoint(hf.listeners[0].bound());
      restoreProxy = holdSystemProxy({ endpoint, bypass: cfg.pac.bypass, mode: proxyMode, log });
    }
  } catch (err) {
    log.fatal({ err }, 'start failed');
    await undoSystem();
    await hf.close(0);
    log.flush();
    process.stderr.write(`holdfast: ${(err as Error).message}\n`);
    return 1;
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
        void undoSystem(); // leftovers are removed at the next start otherwise
        resolve(130);
        return;
      }
      stopping = true;
      log.info({ signal, flows: hf.flows.size, drainMs }, 'stopping');
      restoreProxy?.();
      hf.close(drainMs).then(
        async () => {
          await undoSystem();
          log.info('stopped');
          resolve(0);
        },
        async (err) => {
          log.error({ err }, 'stop failed');
          await undoSystem();
          resolve(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

