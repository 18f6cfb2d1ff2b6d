// Socket activation (sd_listen_fds(3)): systemd, launchd-style wrappers or `systemd-socket-activate
// -l 127.0.0.1:1080 holdfast start` open the listening sockets and hand them over as fds 3, 4, ...
// with LISTEN_FDS=N and LISTEN_PID=<our pid>. holdfast then serves on those sockets (SOCKS5 and
// HTTP on each, like its own listeners) and opens none of its own.
import { createServer } from 'node:net';
import type { ListenAddress } from '../config.js';
import type { InboundContext } from './context.js';
import type { HttpInbound } from './http.js';
import { sniff, type Listener } from './listen.js';

/** The first fd systemd hands over (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/**
 * The fds handed to this process, or [] when none were (no LISTEN_FDS, or LISTEN_PID names
 * another process: the variables were inherited from a parent). Like sd_listen_fds(1), the
 * variables are removed from `env`, so programs holdfast runs (gsettings, ip) do not see them.
 * Throws on malformed values.
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): number[] {
  const fdsText = env.LISTEN_FDS;
  const pidText = env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (fdsText === undefined || pidText === undefined) return [];
  if (!/^\d+$/.test(pidText) || !/^\d+$/.test(fdsText)) throw new Error(`socket activation: bad LISTEN_PID=${pidText} / LISTEN_FDS=${fdsText}`);
  if (Number(pidText) !== pid) return [];
  const n = Number(fdsText);
  if (n > 64) throw new Error(`socket activation: LISTEN_FDS=${n} is more sockets than holdfast takes (64)`);
  return Array.from({ length: n }, (_, i) => LISTEN_FDS_START + i);
}

/**
 * Serve on a listening TCP socket handed over as `fd`. Synchronous on purpose: the caller checks
 * the address (exposure) in the same turn, before the event loop accepts a first connection.
 */
export function adoptListener(fd: number, ctx: InboundContext, http: HttpInbound): Listener {
  let port: number | undefined;
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => sniff(socket, ctx, http, port));
  // a bad fd is reported on the next tick too: logged, not thrown out of the event loop
  server.on('error', (err) => ctx.log.error({ err, fd }, 'listener error'));
  try {
    server.listen({ fd });
  } catch (err) {
    throw new Error(`socket activation: cannot serve on fd ${fd}: ${(err as Error).message}`);
  }
  const a = server.address();
  if (!a || typeof a !== 'object') {
    server.close(() => {});
    throw new Error(`socket activation: fd ${fd} is not a TCP socket (holdfast serves TCP only: ListenStream=HOST:PORT)`);
  }
  const address: ListenAddress = { host: a.address, port: a.port };
  port = a.port;
  return {
    address,
    server,
    bound: () => address,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
