import { type Logger, pino } from 'pino';

export type { Logger };

/** Root logger: JSON lines on stdout, or pino-pretty for humans. */
export function createLogger(opts: { level: string; pretty: boolean }): Logger {
  if (opts.pretty) {
    return pino({
      level: opts.level,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level: opts.level });
}
