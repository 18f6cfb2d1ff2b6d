// What `holdfast doctor` reads from the host: sysctls, routing rules and tables (`ip -j`), and
// GET /status of a listener. The checks (checks.ts) take what these return.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import type { ProxyEndpoint } from '../pac.js';

export function readNumber(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function ip(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('ip', args, { timeout: 5000 }, (err, stdout, stderr) => resolve({ ok: !err, stdout: String(stdout), stderr: String(stderr || (err as Error | null)?.message || '') }));
  });
}

export interface RuleEntry {
  readonly family: 4 | 6;
  readonly src: string;
  readonly table: string;
  readonly priority: number;
  readonly protocol?: string;
}

/** `ip -j rule show` for both families; undefined when ip cannot be run. */
export async function readRules(): Promise<RuleEntry[] | undefined> {
  const out: RuleEntry[] = [];
  for (const family of [4, 6] as const) {
    const r = await ip([`-${family}`, '-N', '-j', 'rule', 'show']);
    if (!r.ok) {
      if (family === 4) return undefined;
      continue;
    }
    if (!r.stdout.trim()) continue;
    for (const e of JSON.parse(r.stdout) as Array<{ priority?: number; src?: string; table?: string; protocol?: string }>) {
      if (!e.src || e.src === 'all' || !e.table) continue;
      out.push({ family, src: e.src, table: String(e.table), priority: e.priority ?? 0, ...(e.protocol ? { protocol: String(e.protocol) } : {}) });
    }
  }
  return out;
}

/** Does `table` have a default route out through `dev`? */
export async function tableDefaultVia(family: 4 | 6, table: string, dev: string): Promise<boolean> {
  const r = await ip([`-${family}`, '-j', 'route', 'show', 'table', table]);
  if (!r.ok || !r.stdout.trim()) return false;
  return (JSON.parse(r.stdout) as Array<{ dst?: string; dev?: string }>).some((e) => e.dst === 'default' && e.dev === dev);
}

/** What answered GET /status at a listener: holdfast (with its status), something else, or nothing. */
export type StatusAnswer = { kind: 'holdfast'; status: Record<string, unknown> } | { kind: 'other'; why: string } | { kind: 'none'; why: string };

export function getStatus(ep: ProxyEndpoint): Promise<StatusAnswer> {
  return new Promise((resolve) => {
    const req = request({ host: ep.host, port: ep.port, path: '/status', method: 'GET', timeout: 2000, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (body.length < 4_000_000) body += d;
      });
      res.on('end', () => {
        try {
          const status = JSON.parse(body) as Record<string, unknown>;
          if (res.statusCode === 200 && Array.isArray(status.interfaces) && Array.isArray(status.flows)) return resolve({ kind: 'holdfast', status });
        } catch {
          /* not JSON */
        }
        resolve({
          kind: 'other',
          why: res.statusCode === 407 ? 'GET /status answered 407 (proxy authentication required)' : `GET /status answered ${res.statusCode}, not holdfast's status`,
        });
      });
      res.on('error', (err) => resolve({ kind: 'other', why: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 2000 ms')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      resolve(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? { kind: 'none', why: err.code } : { kind: 'other', why: err.code ?? err.message });
    });
    req.end();
  });
}


/** firewalld's IPv6_rpfilter when firewalld runs with a strict setting, else undefined. */
export function strictFirewalldRpfilter(): string | undefined {
  try {
    const conf = readFileSync('/etc/firewalld/firewalld.conf', 'utf8');
    const m = /^\s*IPv6_rpfilter\s*=\s*(\S+)/im.exec(conf);
    if (m && existsSync('/run/firewalld') && !/^(no|loose)/i.test(m[1])) return m[1];
  } catch {
    /* no firewalld */
  }
  return undefined;
}
