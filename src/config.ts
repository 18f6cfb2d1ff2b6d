// The configuration: a zod schema over a YAML file. Errors name the file, the key and what was
// expected; unknown keys are errors. Defaults live here and in config/default.yaml (the same).
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { roleNames } from './egress/roles.js';
import { parsePortEntry, parseToEntry, parseViaEntry } from './egress/rules.js';
import { logLevels } from './log.js';

const durationRe = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;
const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The longest timer Node keeps (a longer one fires at once, with a warning): about 24.8 days. */
export const MAX_DURATION_MS = 2 ** 31 - 1;

function showMs(ms: number): string {
  return ms % 1000 === 0 && ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`;
}

/**
 * A duration in [minMs, MAX_DURATION_MS]: a number of milliseconds, or "300ms", "10s", "2m",
 * "1h". With `zeroOk`, 0 is allowed too (it means "off" or "never" for that key).
 */
export function durationIn(minMs: number, zeroOk = false) {
  return z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
    let ms: number;
    if (typeof v === 'number') ms = v;
    else {
      const m = durationRe.exec(v.trim());
      if (!m) {
        ctx.addIssue({ code: 'custom', message: `expected a duration like 300ms, 10s or 2m, got "${v}"` });
        return z.NEVER;
      }
      ms = Number(m[1]) * unitMs[m[2] ?? 'ms'];
    }
    if ((ms === 0 && zeroOk) || (ms >= minMs && ms <= MAX_DURATION_MS)) return ms;
    ctx.addIssue({
      code: 'custom',
      message:
        `${typeof v === 'string' ? `"${v}"` : v} is out of range: expected ${zeroOk ? '0 or ' : ''}` +
        `${showMs(minMs)} to ${MAX_DURATION_MS}ms (about 24.8 days)`,
    });
    return z.NEVER;
  });
}

/** A duration: a number of milliseconds, or "300ms", "10s", "2m", "1h"; 0 to about 24.8 days. */
export const duration = durationIn(0);

const sizeRe = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/;
const unitBytes: Record<string, number> = { B: 1, KiB: 1024, MiB: 1_048_576, GiB: 1_073_741_824 };

/** The largest size a key takes: 1 TiB (well inside a safe integer). */
export const MAX_SIZE_BYTES = 2 ** 40;

/** A size: a number of bytes, or "512KiB", "1MiB", "2GiB"; 0 to 1 TiB. */
export const byteSize = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  let n: number;
  if (typeof v === 'number') n = v;
  else {
    const m = sizeRe.exec(v.trim());
    if (!m) {
      ctx.addIssue({ code: 'custom', message: `expected a size like 65536, 64KiB or 1MiB, got "${v}"` });
      return z.NEVER;
    }
    n = Math.round(Number(m[1]) * unitBytes[m[2] ?? 'B']);
  }
  if (n <= MAX_SIZE_BYTES) return n;
  ctx.addIssue({ code: 'custom', message: `${typeof v === 'string' ? `"${v}"` : v} is out of range: expected 0 to 1TiB` });
  return z.NEVER;
});

/** "10.0.0.0/8", "::1/128", or a bare address (a /32 or /128). */
export const cidr = z.string().refine(
  (s) => {
    const [ip, len, ...rest] = s.split('/');
    const f = isIP(ip);
    if (f === 0 || rest.length) return false;
    if (len === undefined) return true;
    const n = Number(len);
    return /^\d+$/.test(len) && n >= 0 && n <= (f === 4 ? 32 : 128);
  },
  { message: 'expected an address or CIDR like 192.168.0.0/16 or fd00::/8' },
);

/** The hosts that bypass holdfast unless the config says otherwise (the listener itself is added). */
export const defaultBypass = [
  'localhost',
  '127.0.0.0/8',
  '::1',
  '*.local',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '169.254.0.0/16',
  'fe80::/10',
] as const;

const bypassNameRe = /^(?:\*\.|\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?$/i;

/** A bypass entry: "<local>", a name, "*.suffix" or ".suffix", an address or a CIDR. */
export const bypassEntry = z.string().refine(
  (s) => s === '<local>' || bypassNameRe.test(s) || cidr.safeParse(s).success,
  { message: 'expected a host name, *.domain, .domain, an address, a CIDR like 10.0.0.0/8, or <local>' },
);

const typeSetting = z.strictObject({ role: z.enum(roleNames) });

/** one entry or a non-empty list of them; each checked by `parse` (an error names the entry) */
function oneOrMore<T extends string | number>(item: z.ZodType<T>, parse: (v: T) => object) {
  return z.union([item, z.array(item).min(1, { message: 'an empty list: the rule could never match' })]).superRefine((v, ctx) => {
    const items = Array.isArray(v) ? (v as T[]) : [v as T];
    items.forEach((x, i) => {
      const r = parse(x);
      if ('error' in r) ctx.addIssue({ code: 'custom', message: String(r.error), path: Array.isArray(v) ? [i] : [] });
    });
  });
}

/** One destination rule; a rule that could never match is an error naming its key. */
const ruleSchema = z.strictObject({
  to: oneOrMore(z.string(), parseToEntry),
  ports: oneOrMore(z.union([z.number().int(), z.string()]), parsePortEntry).optional(),
  via: oneOrMore(z.string(), parseViaEntry),
});

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** "127.0.0.1:1080", "[::1]:1080", "localhost:1080", ":1080" (all addresses). */
export function parseListen(s: string): ListenAddress | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const listenAddress = z.string().transform((v, ctx) => {
  const l = parseListen(v);
  if (!l) {
    ctx.addIssue({ code: 'custom', message: `expected HOST:PORT (IPv6 as [::1]:1080), got "${v}"` });
    return z.NEVER;
  }
  return l;
});

export const configSchema = z
  .strictObject({
    listen: z.array(listenAddress).min(1).default(['127.0.0.1:1080'].map((s) => parseListen(s)!)),
    log: z
      .strictObject({ level: z.enum(logLevels).default('info') })
      .default({ level: 'info' }),
    dial: z
      .strictObject({
        /** a connect attempt gives up after this (100 ms to ~24.8 days) */
        timeout: durationIn(100).default(10_000),
        /** TCP keepalive on upstream sockets (0 = off) */
        keepAlive: durationIn(1000, true).default(30_000),
      })
      .default({ timeout: 10_000, keepAlive: 30_000 }),
    grace: duration.default(10_000),
    /**
     * upstream TCP sockets as MPTCP (IPPROTO_MPTCP) where the kernel has it; with CAP_NET_ADMIN
     * holdfast also keeps one `subflow backup` endpoint per usable address (`holdfast start --mptcp`)
     */
    mptcp: z
      .union([z.enum(['off', 'on']), z.boolean().transform((b) => (b ? ('on' as const) : ('off' as const)))])
      .default('off'),
    /** names resolved through the system resolver (getaddrinfo) */
    dns: z
      .strictObject({
        /** a lookup that has not answered in this time fails: SOCKS 0x04, HTTP 502 HF_DNS_TIMEOUT */
        timeout: durationIn(100).default(5000),
      })
      .default({ timeout: 5000 }),
    affinity: z
      .strictObject({
        mode: z.enum(['host', 'address', 'off']).default('host'),
        linger: duration.default(30_000),
      })
      .default({ mode: 'host', linger: 30_000 }),
    fallback: z
      .strictObject({ delay: duration.default(300) })
      .default({ delay: 300 }),
    /** proxy authentication; when any user is set, every client must authenticate */
    auth: z
      .strictObject({
        users: z
          .array(z.strictObject({ username: z.string().min(1).max(255), password: z.string().max(255) }))
          .default([]),
        /** a file of "user:password" lines */
        usersFile: z.string().optional(),
        /** the name of an environment variable holding "user:password,user2:password2" */
        usersEnv: z.string().optional(),
      })
      .default({ users: [] }),
    /** a listener on a non-loopback address without auth is refused unless this is true */
    allowUnauthenticated: z.boolean().default(false),
    /** client networks allowed to use the proxy (CIDR); empty: any client that can reach a listener */
    clients: z.array(cidr).default([]),
    limits: z
      .strictObject({
        /** the whole handshake (SOCKS greeting and request, HTTP request head) within this */
        handshakeTimeout: durationIn(100).default(10_000),
        maxHeaderBytes: z.number().int().min(1024).max(1_048_576).default(16_384),
        /** close a tunnel after this long without a byte either way (0 = never) */
        idleTimeout: duration.default(0),
        maxFlows: z.number().int().min(1).max(10_000_000).default(50_000),
        /** per client address; 0 = no per-client limit (all local apps share 127.0.0.1) */
        maxFlowsPerClient: z.number().int().min(0).max(10_000_000).default(0),
      })
      .default({ handshakeTimeout: 10_000, maxHeaderBytes: 16_384, idleTimeout: 0, maxFlows: 50_000, maxFlowsPerClient: 0 }),
    /** the byte relay of tunnels (SOCKS5 CONNECT and BIND, HTTP CONNECT) */
    relay: z
      .strictObject({
        /** hand a tunnel to the native splice relay once one direction has moved this much, and a forwarded body of at least this length from its head (0 = never; Linux with the addon) */
        offloadAfter: byteSize.default(1_048_576),
      })
      .default({ offloadAfter: 1_048_576 }),
    /** the plain-HTTP forwarder (absolute-form requests) */
    forward: z
      .strictObject({
        resume: z
          .strictObject({
            /** Range requests per GET response whose upstream dies mid-body (0 = cut as before) */
            attempts: z.number().int().min(0).max(10).default(2),
          })
          .default({ attempts: 2 }),
      })
      .default({ resume: { attempts: 2 } }),
    shutdown: z
      .strictObject({
        /** on SIGTERM/SIGINT, let flows finish for this long, then cut the rest */
        drain: duration.default(5000),
      })
      .default({ drain: 5000 }),
    /** SOCKS5 UDP ASSOCIATE */
    udp: z
      .strictObject({
        /** an association without a datagram either way for this long ends (0 = never) */
        idleTimeout: duration.default(300_000),
      })
      .default({ idleTimeout: 300_000 }),
    /** SOCKS5 BIND */
    bind: z
      .strictObject({
        /** no connection from the expected peer in this time: reply 0x06 (0 = wait for ever) */
        acceptTimeout: duration.default(60_000),
      })
      .default({ acceptTimeout: 60_000 }),
    /** what the PAC file (GET /proxy.pac, `holdfast pac`), `holdfast env` and the system proxy send direct */
    pac: z
      .strictObject({
        /** hosts that bypass holdfast: names, "*.suffix" / ".suffix", addresses, CIDR, "<local>" (plain names) */
        bypass: z.array(bypassEntry).default([...defaultBypass]),
        /** PAC only: fall back to DIRECT when holdfast does not answer */
        direct: z.boolean().default(false),
      })
      .default({ bypass: [...defaultBypass], direct: false }),
    /** `holdfast start --policy-routing`: one routing table per interface, rules `from <address> lookup <table>` */
    policyRouting: z
      .strictObject({
        /** the table of interface N is tableBase + its ifindex */
        tableBase: z.number().int().min(256).max(2_000_000_000).default(1100),
        /** the rules' priority (before the main table's 32766) */
        priority: z.number().int().min(1).max(32765).default(31000),
      })
      .default({ tableBase: 1100, priority: 31000 }),
    /** per-interface settings, by interface name */
    interfaces: z
      .record(
        z.string(),
        z.strictObject({
          /** DNS servers to resolve names for flows on this interface (exact names only) */
          dns: z.array(z.string().refine((s) => isIP(s) !== 0, { message: 'expected an IP address' })).default([]),
          /** prefer | normal | backup | never (the key may be a glob like wwan*) */
          role: z.enum(roleNames).optional(),
          /** metered or not, whatever NetworkManager says */
          metered: z.boolean().optional(),
        }),
      )
      .default({}),
    /** a role per interface type (src/net/iftype.ts) */
    types: z
      .strictObject({
        wifi: typeSetting.optional(),
        cellular: typeSetting.default({ role: 'backup' }),
        vpn: typeSetting.optional(),
        ethernet: typeSetting.optional(),
        other: typeSetting.optional(),
      })
      .default({ cellular: { role: 'backup' } }),
    /** the role of metered interfaces (NetworkManager's GENERAL.METERED, or interfaces.<name>.metered) */
    metered: z.strictObject({ role: z.enum(roleNames).optional() }).default({ role: 'backup' }),
    /** destination rules, first match wins: `to` (addresses, CIDRs, names, *.suffix), `ports`, `via` */
    rules: z.array(ruleSchema).default([]),
  });

export type Config = z.output<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const defaultConfigPath = fileURLToPath(new URL('../../config/default.yaml', import.meta.url));

function describeIssues(file: string, err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const key = i.path.length ? i.path.join('.') : '(top level)';
      const msg =
        i.code === 'unrecognized_keys' ? `unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')}` : i.message;
      return `${file}: ${key}: ${msg}`;
    })
    .join('\n');
}

/** Validate an already-parsed object. `file` names the source in error messages. */
export function parseConfig(raw: unknown, file = '(config)'): Config {
  const r = configSchema.safeParse(raw ?? {});
  if (!r.success) throw new ConfigError(describeIssues(file, r.error));
  return r.data;
}

export function loadConfig(file: string = defaultConfigPath): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  return parseConfig(raw, file);
}
