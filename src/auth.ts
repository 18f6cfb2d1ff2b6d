// Proxy authentication: SOCKS5 username/password (RFC 1929) and HTTP Basic
// (Proxy-Authorization). Credentials are compared in constant time: every user's digest is
// compared, whatever matched, so timing tells nothing about which part was wrong.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from './config.js';

export interface User {
  readonly username: string;
  readonly password: string;
}

export interface Authenticator {
  /** true when credentials are required */
  readonly required: boolean;
  check(username: string, password: string): boolean;
  /** check an HTTP `Proxy-Authorization` header value ("Basic base64(user:pass)") */
  checkBasic(header: string | undefined): boolean;
}

function digest(username: string, password: string): Buffer {
  return createHash('sha256').update(username).update('\0').update(password).digest();
}

export function createAuthenticator(users: readonly User[]): Authenticator {
  const digests = users.map((u) => digest(u.username, u.password));
  const check = (username: string, password: string): boolean => {
    const d = digest(username, password);
    let ok = false;
    for (const x of digests) ok = timingSafeEqual(d, x) || ok;
    return ok;
  };
  return {
    required: digests.length > 0,
    check,
    checkBasic(header) {
      if (!header) return false;
      const m = /^\s*basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
      if (!m) return false;
      const text = Buffer.from(m[1], 'base64').toString('utf8');
      const colon = text.indexOf(':');
      if (colon < 0) return false;
      return check(text.slice(0, colon), text.slice(colon + 1));
    },
  };
}

/** "user:password" pairs, one per line (file) or comma-separated (environment variable). */
export function parseUserList(text: string, separator: RegExp): User[] {
  const out: User[] = [];
  const entries = text.split(separator);
  for (let i = 0; i < entries.length; i++) {
    const line = entries[i].trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    // the entry itself is not shown: it may well be a password
    if (colon <= 0) throw new Error(`entry ${i + 1}: expected "user:password"`);
    out.push({ username: line.slice(0, colon), password: line.slice(colon + 1) });
  }
  return out;
}

/** All users from the config: inline, from `usersFile`, from the `usersEnv` variable. */
export function loadUsers(auth: { users: readonly User[]; usersFile?: string; usersEnv?: string }): User[] {
  const users = [...auth.users];
  if (auth.usersFile) {
    let text: string;
    try {
      text = readFileSync(auth.usersFile, 'utf8');
    } catch (err) {
      throw new ConfigError(`auth.usersFile: cannot read ${auth.usersFile}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
    try {
      users.push(...parseUserList(text, /\r?\n/));
    } catch (err) {
      throw new ConfigError(`auth.usersFile: ${auth.usersFile}: ${(err as Error).message}`);
    }
  }
  if (auth.usersEnv) {
    const text = process.env[auth.usersEnv];
    if (text === undefined) throw new ConfigError(`auth.usersEnv: the environment variable ${auth.usersEnv} is not set`);
    try {
      users.push(...parseUserList(text, /,/));
    } catch (err) {
      throw new ConfigError(`auth.usersEnv: ${auth.usersEnv}: ${(err as Error).message}`);
    }
  }
  return users;
}
