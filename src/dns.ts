// Name resolution for flows. The dialer takes addresses only; this turns the client's name into
// targets. Address literals never touch a resolver.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Destination, Family, Target } from './contracts.js';
import { DnsError } from './errors.js';

export interface Resolver {
  /** All addresses for dst, in the order to try them. Literal addresses resolve to themselves. */
  resolve(dst: Destination): Promise<Target[]>;
}

export function literalTarget(host: string, port: number): Target | undefined {
  const f = isIP(host);
  if (f === 0) return undefined;
  return { ip: host, family: f as Family, port };
}

/** The system resolver (getaddrinfo), as the host would resolve. */
export function createSystemResolver(): Resolver {
  return {
    async resolve(dst) {
      const lit = literalTarget(dst.host, dst.port);
      if (lit) return [lit];
      let addrs: { address: string; family: number }[];
      try {
        addrs = await lookup(dst.host, { all: true, verbatim: true });
      } catch (err) {
        throw new DnsError(`resolve ${dst.host}: ${(err as NodeJS.ErrnoException).code ?? 'failed'}`, err);
      }
      if (addrs.length === 0) throw new DnsError(`resolve ${dst.host}: no addresses`);
      return addrs.map((a) => ({ ip: a.address, family: a.family as Family, port: dst.port }));
    },
  };
}
