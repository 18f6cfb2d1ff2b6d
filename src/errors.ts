// Every failure holdfast reports has a class and a stable HF_* code. Logs, /status and tests rely
// on the codes; never rename one. OS errors stay as `cause`. One table maps codes to the SOCKS5
// reply and HTTP status; nothing else maps errors.

export const HfCode = {
  AUTH: 'HF_AUTH',
  BAD_REQUEST: 'HF_BAD_REQUEST',
  NOT_ALLOWED: 'HF_NOT_ALLOWED',
  NO_EGRESS: 'HF_NO_EGRESS',
  NET_UNREACHABLE: 'HF_NET_UNREACHABLE',
  HOST_UNREACHABLE: 'HF_HOST_UNREACHABLE',
  DNS: 'HF_DNS',
  DNS_TIMEOUT: 'HF_DNS_TIMEOUT',
  REFUSED: 'HF_REFUSED',
  DIAL_TIMEOUT: 'HF_DIAL_TIMEOUT',
  CMD_UNSUPPORTED: 'HF_CMD_UNSUPPORTED',
  ATYP_UNSUPPORTED: 'HF_ATYP_UNSUPPORTED',
  EGRESS_LOST: 'HF_EGRESS_LOST',
  LIMIT: 'HF_LIMIT',
  INTERNAL: 'HF_INTERNAL',
  /** the forwarder's Range request did not continue the same representation (not a 206 of the missing range with the same validator) */
  RESUME_REFUSED: 'HF_RESUME_REFUSED',
} as const;
export type HfCode = (typeof HfCode)[keyof typeof HfCode];

/** SOCKS5 reply codes (RFC 1928 section 6). */
export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NET_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  CMD_UNSUPPORTED: 0x07,
  ATYP_UNSUPPORTED: 0x08,
} as const;
export type Reply = (typeof Reply)[keyof typeof Reply];

const replyTexts: Record<Reply, string> = {
  0x00: 'succeeded',
  0x01: 'general SOCKS server failure',
  0x02: 'connection not allowed by ruleset',
  0x03: 'network unreachable',
  0x04: 'host unreachable',
  0x05: 'connection refused',
  0x06: 'TTL expired',
  0x07: 'command not supported',
  0x08: 'address type not supported',
};
export function replyText(r: number): string {
  return replyTexts[r as Reply] ?? `unknown reply 0x${r.toString(16).padStart(2, '0')}`;
}

/** The one mapping from codes to protocol answers. An unmapped code does not compile. */
export const codeTable = {
  HF_AUTH: { socks: Reply.NOT_ALLOWED, http: 407 },
  HF_BAD_REQUEST: { socks: Reply.GENERAL_FAILURE, http: 400 },
  HF_NOT_ALLOWED: { socks: Reply.NOT_ALLOWED, http: 403 },
  HF_NO_EGRESS: { socks: Reply.NET_UNREACHABLE, http: 503 },
  HF_NET_UNREACHABLE: { socks: Reply.NET_UNREACHABLE, http: 502 },
  HF_HOST_UNREACHABLE: { socks: Reply.HOST_UNREACHABLE, http: 502 },
  HF_DNS: { socks: Reply.HOST_UNREACHABLE, http: 502 },
  HF_DNS_TIMEOUT: { socks: Reply.HOST_UNREACHABLE, http: 502 },
  HF_REFUSED: { socks: Reply.REFUSED, http: 502 },
  HF_DIAL_TIMEOUT: { socks: Reply.TTL_EXPIRED, http: 504 },
  HF_CMD_UNSUPPORTED: { socks: Reply.CMD_UNSUPPORTED, http: 501 },
  HF_ATYP_UNSUPPORTED: { socks: Reply.ATYP_UNSUPPORTED, http: 501 },
  HF_EGRESS_LOST: { socks: Reply.GENERAL_FAILURE, http: 502 },
  HF_LIMIT: { socks: Reply.GENERAL_FAILURE, http: 503 },
  HF_INTERNAL: { socks: Reply.GENERAL_FAILURE, http: 502 },
  HF_RESUME_REFUSED: { socks: Reply.GENERAL_FAILURE, http: 502 },
} as const satisfies Record<HfCode, { socks: Reply; http: number }>;

export class HoldfastError extends Error {
  readonly code: HfCode;
  constructor(code: HfCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return this.constructor.name;
  }
}

/** The base of an error class with a fixed code: `class AuthError extends coded(HfCode.AUTH) {}`. */
function coded(code: HfCode) {
  return class extends HoldfastError {
    constructor(message: string) {
      super(code, message);
    }
  };
}

export class AuthError extends coded(HfCode.AUTH) {}
export class BadRequestError extends coded(HfCode.BAD_REQUEST) {}
export class NotAllowedError extends coded(HfCode.NOT_ALLOWED) {}
/** A request that would reach holdfast itself (its listeners, 0.0.0.0, ::), or came from its own dialer. */
export class LoopError extends NotAllowedError {}
export class NoEgressError extends coded(HfCode.NO_EGRESS) {}
export class DnsError extends HoldfastError {
  constructor(message: string, cause?: unknown) {
    super(HfCode.DNS, message, { cause });
  }
}
/** The system resolver did not answer in time (or too many lookups already wait for it). */
export class DnsTimeoutError extends coded(HfCode.DNS_TIMEOUT) {}
export class DialTimeoutError extends coded(HfCode.DIAL_TIMEOUT) {}
export class CommandUnsupportedError extends coded(HfCode.CMD_UNSUPPORTED) {}
export class EgressLostError extends coded(HfCode.EGRESS_LOST) {}
export class LimitError extends coded(HfCode.LIMIT) {}
export class ResumeRefusedError extends coded(HfCode.RESUME_REFUSED) {}
/** Every attempt of a dial failed; `attempts` reads "wlan0 10.1.1.2: HF_REFUSED; eth0 ...". */
export class EgressUnreachableError extends HoldfastError {
  readonly attempts: string;
  constructor(code: HfCode, message: string, attempts: string, cause?: unknown) {
    super(code, message, { cause });
    this.attempts = attempts;
  }
}

/** Map an OS connect error code to ours. ECONNREFUSED means the server answered. */
export function codeOfOsError(err: unknown): HfCode {
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return HfCode.REFUSED;
    case 'ENETUNREACH':
    case 'ENETDOWN':
    case 'EADDRNOTAVAIL':
    case 'ENODEV':
      return HfCode.NET_UNREACHABLE;
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
      return HfCode.HOST_UNREACHABLE;
    case 'ETIMEDOUT':
      return HfCode.DIAL_TIMEOUT;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'ENODATA':
    case 'ESERVFAIL':
    case 'EREFUSED':
    case 'ENONAME':
      return HfCode.DNS;
    default:
      return HfCode.INTERNAL;
  }
}

export function hfCodeOf(err: unknown): HfCode {
  if (err instanceof HoldfastError) return err.code;
  return codeOfOsError(err);
}

export function toSocksReply(err: unknown): Reply {
  return codeTable[hfCodeOf(err)].socks;
}

export function toHttpStatus(err: unknown): number {
  return codeTable[hfCodeOf(err)].http;
}
