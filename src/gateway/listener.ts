import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import { type ClientHandle, type ConnectionDeps, handleConnection } from './connection.js';

/**
 * The Postgres TCP listener. Shutdown follows stop accepting → drain (running transactions may
 * finish, bounded by a timeout) → close.
 */
export class GatewayListener {
  private readonly server: Server;
  private readonly clients = new Set<ClientHandle>();

  constructor(
    private readonly deps: ConnectionDeps,
    private readonly logger: Logger,
  ) {
    this.server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.logger.error({ err }, 'listener error'));
  }

  get connectionCount(): number {
    return this.clients.size;
  }

  async listen(port: number, host: string): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address();
    if (!address || typeof address === 'string') throw new Error('listener has no TCP address');
    return address.port;
  }

  private accept(socket: Socket): void {
    const client = handleConnection(socket, this.deps);
    this.clients.add(client);
    void client.closed.then(() => this.clients.delete(client));
  }

  /** Stops accepting, lets clients finish their transactions for up to `drainTimeoutMs`, then ends them. */
  async close(drainTimeoutMs: number): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const client of this.clients) client.drain();
    const drained = Promise.all([...this.clients].map((c) => c.closed));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), drainTimeoutMs);
    });
    if ((await Promise.race([drained, timedOut])) === 'timeout') {
      this.logger.warn({ clients: this.clients.size }, 'drain timeout: closing remaining clients');
      for (const client of this.clients) client.kill();
      await Promise.race([Promise.all([...this.clients].map((c) => c.closed)), sleep(2000)]);
    }
    clearTimeout(timer);
    await stopped;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());
