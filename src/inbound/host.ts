// Is a request's Host header one of ours? holdfast's own pages (status, dashboard, metrics)
// answer only requests addressed to an IP, localhost or this machine's name, so a web page cannot
// read them through a name it controls (DNS rebinding).
import { isIP } from 'node:net';
import { hostname } from 'node:os';

/** The Host header names an IP address, localhost or this machine (not a name a web page chose). */
export function hostIsOurs(host: string | undefined): boolean {
  if (host === undefined || host === '') return true; // HTTP/1.0
  let name = host.trim().toLowerCase();
  if (name.startsWith('[')) name = name.slice(1, name.indexOf(']') < 0 ? undefined : name.indexOf(']'));
  else if (name.lastIndexOf(':') > 0 && isIP(name) === 0) name = name.slice(0, name.lastIndexOf(':'));
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (isIP(name) !== 0) return true;
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  const me = hostname().toLowerCase();
  return name === me || name === me.split('.')[0];
}
