import type { Server } from 'node:net';

/**
 * Starts `server` listening on a TCP port (0 picks a free one) or a Unix socket path, and
 * resolves once it listens; a failure to bind (EADDRINUSE, EACCES) rejects instead of surfacing
 * as an 'error' event later. Resolves with the bound TCP port, or 0 for a socket path.
 */
export function listen(
  server: Server,
  ...at: [port: number, host: string] | [path: string]
): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const onListening = () => {
      server.off('error', reject);
      const address = server.address();
      resolve(address && typeof address === 'object' ? address.port : 0);
    };
    if (at.length === 1) server.listen(at[0], onListening);
    else server.listen(at[0], at[1], onListening);
  });
}
