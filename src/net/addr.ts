// IP address text: the small questions several parts ask of an address string, answered once.
// A leaf: imports nothing of holdfast.

/** "fe80::1%eth0" -> "fe80::1": the address without its IPv6 zone id. */
export function stripZone(ip: string): string {
  const i = ip.indexOf('%');
  return i < 0 ? ip : ip.slice(0, i);
}

/** IPv6 fe80::/10 or IPv4 169.254/16, with or without "/len" and "%zone". */
export function isLinkLocal(ip: string): boolean {
  return /^(fe[89ab]|169\.254\.)/i.test(ip);
}

/** "::ffff:127.0.0.1" (an IPv4 peer of a dual-stack socket, or an IPv4-mapped IPv6) -> "127.0.0.1". */
export function unmap(ip: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip;
}

/** 127.0.0.0/8, ::1, or 127/8 mapped into IPv6. */
export function isLoopbackIp(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip.startsWith('::ffff:127.');
}
