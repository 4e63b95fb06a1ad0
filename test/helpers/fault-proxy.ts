import net from 'node:net';

/**
 * A small TCP proxy on loopback between one node and one dependency (the catalog, the archive, a
 * peer), for fault injection: `cut` (existing connections are destroyed and new ones refused),
 * `blackhole` (bytes are swallowed, connections hang: a network partition as the node sees it)
 * and `delay` (each chunk forwarded after a pause). Every fault is bounded: given a duration it
 * heals by itself, and `close()` heals and stops.
 */
export type FaultMode = 'pass' | 'cut' | 'blackhole' | 'delay';

/** Longest a fault may last before it heals by itself (a forgotten heal cannot hang a test run). */
const MAX_FAULT_MS = 120_000;

export class TcpFaultProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private mode: FaultMode = 'pass';
  private delayMs = 0;
  private healTimer: NodeJS.Timeout | undefined;
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.server = net.createServer({ pauseOnConnect: true }, (client) => this.accept(client));
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.mode === 'cut') {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    const pair = { client, upstream };
    this.pairs.add(pair);
    const forget = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.once('close', forget);
    upstream.once('close', forget);
    const relay = (from: net.Socket, to: net.Socket) => {
      from.on('data', (chunk: Buffer) => {
        if (this.mode === 'blackhole') return;
        if (this.mode === 'delay') {
          from.pause();
          setTimeout(() => {
            if (!to.destroyed) to.write(chunk);
            from.resume();
          }, this.delayMs);
          return;
        }
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
    };
    relay(client, upstream);
    relay(upstream, client);
    client.resume();
  }

  /** Applies a fault for `forMs` (then heals by itself; at most 2 minutes). */
  fault(mode: Exclude<FaultMode, 'pass'>, forMs: number, delayMs = 0): void {
    clearTimeout(this.healTimer);
    this.mode = mode;
    this.delayMs = delayMs;
    if (mode === 'cut') for (const p of this.pairs) p.client.destroy();
    this.healTimer = setTimeout(() => this.heal(), Math.min(forMs, MAX_FAULT_MS));
    this.healTimer.unref();
  }

  heal(): void {
    clearTimeout(this.healTimer);
    // Connections that lived through a blackhole have lost bytes: end them so clients reconnect.
    if (this.mode === 'blackhole') for (const p of this.pairs) p.client.destroy();
    this.mode = 'pass';
  }

  async close(): Promise<void> {
    this.heal();
    for (const p of this.pairs) p.client.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
