// Checks on values a client controls, made before they reach a Node API that throws on them
// (dgram.send and net.connect throw ERR_SOCKET_BAD_PORT on port 0 or > 65535, and a throw in an
// event handler ends the process), and the guard that keeps any other throw on a per-connection
// path to that connection.
import { isIP } from 'node:net';
import type { Logger } from 'pino';

/** A port a flow may be sent to: 1..65535 (0 means "any" to the kernel, never a destination). */
export function isDestinationPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/**
 * 0.0.0.0, :: and their spellings (IPv4-mapped ::ffff:0.0.0.0, 0:0::0): "this host". A connect
 * to one reaches the host's own listeners (Linux sends it to the socket's own source address or
 * to loopback), so holdfast treats it as itself.
 */
export function isUnspecifiedIp(ip: string): boolean {
  const f = isIP(ip);
  if (f === 4) return ip === '0.0.0.0';
  if (f !== 6) return false;
  let c: string;
  try {
    c = new URL(`http://[${ip.split('%')[0]}]/`).hostname.slice(1, -1);
  } catch {
    return false;
  }
  return c === '::' || c === '::ffff:0:0';
}

/**
 * Run a per-connection step; a throw ends that connection only (logged as unexpected, with the
 * error), never the process. Returns false if it threw.
 */
export function guarded(log: Logger, what: string, end: (err: unknown) => void, fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    log.error({ err, where: what }, 'unexpected error; this connection is closed');
    try {
      end(err);
    } catch {
      /* the end of a connection that is already gone */
    }
    return false;
  }
}
