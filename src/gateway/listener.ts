import { createServer, type Server, type Socket } from 'node:net';
import { listen } from '../listen.js';
import type { Logger } from '../log.js';
import {
  type ClientHandle,
  type ConnectionDeps,
  type ForwardedClient,
  handleConnection,
} from './connection.js';

/**
 * The Postgres TCP listener. Shutdown follows stop accepting → drain (running transactions may
 * finish, bounded by a timeout) → close.
 */
/** How often a drain logs the clients it still waits for, the first time after 1 s. */
const DRAIN_PROGRESS_INTERVAL_MS = 5000;
const FIRST_DRAIN_REPORT_MS = 1000;

export class GatewayListener {
  private readonly server: Server;
  private readonly clients = new Set<ClientHandle>();
  /** Set by `endDrain()`: the drain (running or not yet started) stops waiting. */
  private drainCut = false;
  private cutDrain: (() => void) | undefined;

  constructor(
    readonly deps: ConnectionDeps,
    private readonly logger: Logger,
  ) {
    this.server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.logger.error({ err }, 'listener error'));
  }

  get connectionCount(): number {
    return this.clients.size;
  }

  listen(port: number, host: string): Promise<number> {
    return listen(this.server, port, host);
  }

  private accept(socket: Socket, forwarded?: ForwardedClient): void {
    const client = handleConnection(socket, this.deps, {}, forwarded);
    this.clients.add(client);
    void client.closed.then(() => this.clients.delete(client));
  }

  /** A session a peer forwarded (cluster mode): served and drained like our own clients. */
  adopt(socket: Socket, forwarded: ForwardedClient): void {
    this.accept(socket, forwarded);
  }

  /**
   * Stops accepting, lets clients finish their transactions for up to `drainTimeoutMs` (logging
   * every few seconds how many are left), then ends them. `endDrain()` ends them at once.
   */
  async close(drainTimeoutMs: number): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const client of this.clients) client.drain();
    const drained = Promise.all([...this.clients].map((c) => c.closed)).then(() => 'drained' as const);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), drainTimeoutMs);
    });
    const cut = new Promise<'cut'>((resolve) => {
      this.cutDrain = () => resolve('cut');
      if (this.drainCut) resolve('cut');
    });
    const deadline = Date.now() + drainTimeoutMs;
    const report = () =>
      this.logger.info(
        {
          clients: this.clients.size,
          openDatabases: this.deps.registry.openCount,
          remainingSeconds: Math.max(0, Math.round((deadline - Date.now()) / 1000)),
        },
        'draining: waiting for clients to finish their transactions',
      );
    // The first report comes after idle clients had a moment to go; then one every few seconds.
    let progress: NodeJS.Timeout | undefined;
    const tick = () => {
      report();
      progress = setTimeout(tick, DRAIN_PROGRESS_INTERVAL_MS);
    };
    if (this.clients.size > 0 && !this.drainCut) progress = setTimeout(tick, FIRST_DRAIN_REPORT_MS);
    const outcome = await Promise.race([drained, timedOut, cut]);
    clearTimeout(progress);
    clearTimeout(timer);
    if (outcome !== 'drained' && this.clients.size > 0) {
      const why = outcome === 'timeout' ? 'drain timeout' : 'drain cut short';
      this.logger.warn({ clients: this.clients.size }, `${why}: closing remaining clients`);
      for (const client of this.clients) client.kill();
      await Promise.race([Promise.all([...this.clients].map((c) => c.closed)), sleep(2000)]);
    }
    await stopped;
  }

  /** Stops a drain from waiting (a second SIGTERM/SIGINT): its remaining clients are ended now. */
  endDrain(): void {
    this.drainCut = true;
    this.cutDrain?.();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());
