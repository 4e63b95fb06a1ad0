import { loadConfig } from './config.js';
import { createLogger } from './log.js';
import { startServer } from './server.js';

/** `serve`: the composition root. Config → logger → server; SIGTERM/SIGINT shut down gracefully. */
export async function serve(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.log);
  const server = await startServer(config, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
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
