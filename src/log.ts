// The root logger: pino, JSON lines on stdout. Per-flow children are made once at flow open;
// the relay never logs. Secrets are redacted wherever they would appear.
import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';

export type { Logger };

export const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export function createLogger(level: LevelWithSilent, dest?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: {
        paths: [
          'headers["proxy-authorization"]',
          'req.headers["proxy-authorization"]',
          'password',
          '*.password',
        ],
        censor: '[redacted]',
      },
    },
    dest ?? pino.destination({ dest: 1, sync: false }),
  );
}
