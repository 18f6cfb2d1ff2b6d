// The configuration: a zod schema over a YAML file. Errors name the file, the key and what was
// expected; unknown keys are errors. Defaults live here and in config/default.yaml (the same).
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { logLevels } from './log.js';

const durationRe = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;
const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration: a number of milliseconds, or "300ms", "10s", "2m", "1h". */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const m = durationRe.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like 300ms, 10s or 2m, got "${v}"` });
    return z.NEVER;
  }
  return Number(m[1]) * unitMs[m[2] ?? 'ms'];
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
        timeout: duration.default(10_000),
        keepAlive: duration.default(30_000),
      })
      .default({ timeout: 10_000, keepAlive: 30_000 }),
    grace: duration.default(10_000),
    affinity: z
      .strictObject({
        mode: z.enum(['host', 'address', 'off']).default('host'),
        linger: duration.default(30_000),
      })
      .default({ mode: 'host', linger: 30_000 }),
    fallback: z
      .strictObject({ delay: duration.default(300) })
      .default({ delay: 300 }),
    /** per-interface settings, by interface name */
    interfaces: z
      .record(
        z.string(),
        z.strictObject({
          /** DNS servers to resolve names for flows on this interface */
          dns: z.array(z.string().refine((s) => isIP(s) !== 0, { message: 'expected an IP address' })).default([]),
        }),
      )
      .default({}),
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
