// `holdfast status`: ask a running holdfast for /status and print it for a person (or as JSON).
import { request } from 'node:http';
import { ConfigError, defaultConfigPath, formatHostPort, loadConfig } from '../config.js';
import { format } from '../observe/format.js';
import type { StatusJson } from '../observe/status.js';
import { fail, parseCommand } from './common.js';

export const help = `Usage: holdfast status [--watch] [--json] [--url URL] [--config FILE]

Show a running holdfast's interfaces (state, type, metered, role, addresses, default routes,
which one the kernel would pick now) and its live flows (kind, destination, the interface each is pinned to, how it was
placed, age, bytes, current rate).

Options:
  -w, --watch        redraw every second (Ctrl-C to stop)
      --json         print the /status JSON instead (one line per second with --watch)
  -u, --url URL      the holdfast to ask, e.g. http://127.0.0.1:1080
                     (default: the first listener of the config file)
  -c, --config FILE  configuration file for the default URL; default: the embedded
                     ${defaultConfigPath}
  -h, --help         show this help

Exit status: 0, or 1 if nothing answers at the URL, 2 for a usage error.
The same data, live in a browser: open the URL itself (e.g. http://127.0.0.1:1080/).
`;

const TIMEOUT_MS = 3000;

class Unreachable extends Error {}

/** GET url/status and parse it; throws Unreachable with a message for a person. */
function fetchStatus(base: URL): Promise<StatusJson> {
  const url = new URL('/status', base);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: TIMEOUT_MS, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => reject(new Unreachable(`${base.origin}: ${err.message}`)));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) {
          reject(new Unreachable(`${url.href} answered ${res.statusCode}: is this holdfast?`));
          return;
        }
        try {
          const st = JSON.parse(text) as StatusJson;
          if (!Array.isArray(st.interfaces) || !Array.isArray(st.flows)) throw new Error('no interfaces or flows');
          resolve(st);
        } catch {
          reject(new Unreachable(`${url.href} did not answer with holdfast's status JSON: is this holdfast?`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${TIMEOUT_MS} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ECONNREFUSED'
          ? 'connection refused'
          : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
            ? `cannot resolve ${url.hostname}`
            : err.message;
      reject(new Unreachable(`no holdfast is running at ${base.origin} (${why}); start one with \`holdfast start\``));
    });
    req.end();
  });
}

/** The URL of the config's first listener (wildcard addresses asked on loopback). */
function urlFromConfig(file: string): URL {
  const cfg = loadConfig(file);
  const l = cfg.listen[0];
  const host = l.host === '0.0.0.0' || l.host === '' ? '127.0.0.1' : l.host === '::' ? '::1' : l.host;
  return new URL(`http://${formatHostPort(host, l.port)}/`);
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand(
    argv,
    help,
    {
        watch: { type: 'boolean', short: 'w' },
        json: { type: 'boolean' },
        url: { type: 'string', short: 'u' },
        config: { type: 'string', short: 'c' },
    },
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  let base: URL;
  if (values.url !== undefined) {
    try {
      base = new URL(/^[a-z]+:\/\//i.test(values.url) ? values.url : `http://${values.url}`);
    } catch {
      return fail(`--url ${values.url}: not a URL (e.g. http://127.0.0.1:1080)`);
    }
    if (base.protocol !== 'http:') return fail(`--url ${values.url}: holdfast answers plain http://`);
  } else {
    try {
      base = urlFromConfig(values.config ?? defaultConfigPath);
    } catch (err) {
      if (err instanceof ConfigError) return fail(err.message);
      throw err;
    }
  }

  const out = process.stdout;
  const color = out.isTTY === true && !process.env.NO_COLOR;
  const render = (st: StatusJson): string =>
    values.json
      ? JSON.stringify(st, null, values.watch ? undefined : 2) + '\n'
      : format(st, st.now ?? Date.now(), {
          color,
          source: base.origin,
          ...(values.watch && out.rows ? { maxFlows: Math.max(3, out.rows - 12 - 2 * st.interfaces.length) } : {}),
        });

  let first: StatusJson;
  try {
    first = await fetchStatus(base);
  } catch (err) {
    if (err instanceof Unreachable) {
      process.stderr.write(`holdfast: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (!values.watch) {
    out.write(render(first));
    return 0;
  }

  // --watch: redraw every second until Ctrl-C; if holdfast goes away, say so and keep asking
  const clear = values.json || !out.isTTY ? '' : '\x1b[H\x1b[2J';
  return new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const draw = (text: string) => out.write(clear + text);
    const tick = async () => {
      const at = Date.now();
      try {
        draw(render(await fetchStatus(base)));
      } catch (err) {
        if (!(err instanceof Unreachable)) throw err;
        draw(`holdfast: ${err.message}\n(retrying every second; Ctrl-C to stop)\n`);
      }
      if (!stopped) timer = setTimeout(() => void tick(), Math.max(0, 1000 - (Date.now() - at)));
    };
    draw(render(first));
    timer = setTimeout(() => void tick(), 1000);
  });
}
