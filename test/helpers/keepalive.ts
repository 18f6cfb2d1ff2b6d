// What the kernel shows of a TCP connection's keepalive (`ss -o`), for the tests of dial.keepAlive.
import { execFileSync } from 'node:child_process';

/**
 * The established connections `ss` matches with `filter` (its words: `dst 127.0.0.1:PORT`,
 * `src ...`), and the keepalive timer of the first: the seconds left to its next probe, or
 * undefined when it has none (SO_KEEPALIVE off).
 */
export function keepaliveOf(...filter: string[]): { connections: number; left: number | undefined } {
  const out = execFileSync('ss', ['-tnoH', 'state', 'established', ...filter], { encoding: 'utf8' }).trim();
  const connections = out === '' ? 0 : out.split('\n').length;
  const m = /timer:\(keepalive,(?:(\d+)min)?(\d+(?:\.\d+)?)(m?s)(?:ec)?,/.exec(out);
  const left = m ? Number(m[1] ?? 0) * 60 + Number(m[2]) / (m[3] === 'ms' ? 1000 : 1) : undefined;
  return { connections, left };
}
