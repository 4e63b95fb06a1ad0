import { loadConfig } from './config.js';
import { createLogger } from './log.js';
import { startServer } from './server.js';

/**
 * `serve`: the composition root. Config → logger → server. SIGTERM/SIGINT shut down gracefully
 * (clients may finish their transactions for DRAIN_TIMEOUT); a second signal ends the clients at
 * once, then closes (and snapshots) the databases; a third exits without closing anything more.
 */
export async function serve(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.log);
  const server = await startServer(config, logger, {
    onFenced: (reason) => {
      // Nothing more may reach the archive: no drain, no final snapshot. Exit code 3 says why.
      logger.fatal({ reason }, 'fenced: exiting at once so this node writes nothing more to the archive');
      logger.flush();
      process.exit(3);
    },
  });
  let signals = 0;
  const stop = (signal: string) => {
    signals++;
    if (signals === 2) {
      logger.warn(
        { signal },
        'second signal: ending client connections now, then closing databases (a third signal exits at once)',
      );
      server.endDrain();
      return;
    }
    if (signals > 2) {
      logger.warn({ signal }, 'third signal: exiting without waiting for databases to close');
      logger.flush();
      process.exit(1);
    }
    logger.info(
      { signal, drainTimeoutSeconds: Math.round(config.drainTimeoutMs / 1000) },
      'shutting down: waiting for open transactions (send the signal again to end them now)',
    );
    server.close().then(
      () => {
        logger.info('stopped');
        logger.flush();
        process.exit(0);
      },
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
