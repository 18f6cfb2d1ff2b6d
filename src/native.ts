// Loads the native addon (native/holdfast_native.c) if it built. Without it holdfast still runs:
// sockets are bound to the interface's address only, and the start-up warning says what is lost.
import { createRequire } from 'node:module';

export interface NativeAddon {
  /**
   * A non-blocking socket (kind 0 = TCP, 1 = UDP, 2 = MPTCP) bound to the device, and to `source`
   * (port 0) if given; returns its fd. A stream socket's port is picked and reserved by the bind
   * (no other socket's connect() can take it: a device-bound socket is invisible to an unbound
   * one's 4-tuple check); where none is free, it is left to connect() (IP_BIND_ADDRESS_NO_PORT).
   * Kind 2 throws EPROTONOSUPPORT / ENOPROTOOPT / EINVAL where the kernel has no MPTCP (or
   * net.mptcp.enabled=0). With `noDelay` (stream sockets):
   * TCP_NODELAY, set before the connect (what Node's setNoDelay would set after it).
   */
  openBound(family: 4 | 6, kind: 0 | 1 | 2, ifname: string, source?: string | null, noDelay?: boolean): number;
  /**
   * SO_KEEPALIVE on a connected stream socket, the first probe after `secs` idle (>= 1), then one
   * a second, ten unanswered end it (what Node 22's libuv sets): the dialer sets it once a flow
   * has lived a second, so a short flow never pays its four setsockopt calls.
   * Absent in an addon built before it (the dialer then uses Node's setKeepAlive: the idle only).
   */
  keepAlive?(fd: number, secs: number): void;
  /**
   * The subflows of a connected MPTCP socket (local and remote address of each), or null for a
   * plain TCP socket or an MPTCP one that fell back to TCP. Absent in an addon built before it.
   */
  mptcpSubflows?(fd: number): Array<{ local: string; remote: string }> | null;
  /** The source address the kernel would pick for ip now (IPv6 link-local as "fe80::1%eth0"). */
  routeSource(family: 4 | 6, ip: string): string;
  closeFd(fd: number): void;
}

export type AddonState = { ok: true; addon: NativeAddon } | { ok: false; why: string };

let state: AddonState | undefined;

export function loadAddon(): AddonState {
  if (state) return state;
  if (process.env.HOLDFAST_NO_ADDON === '1') {
    state = { ok: false, why: 'disabled by HOLDFAST_NO_ADDON=1' };
    return state;
  }
  const require = createRequire(import.meta.url);
  try {
    state = { ok: true, addon: require('../../build/Release/holdfast_native.node') as NativeAddon };
  } catch (err) {
    state = { ok: false, why: (err as Error).message.split('\n')[0] };
  }
  return state;
}
