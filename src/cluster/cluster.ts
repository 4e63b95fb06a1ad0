import type { Socket } from 'node:net';
import type { Catalog } from '../catalog/catalog.js';
import { openPostgresSqlClient } from '../catalog/postgres.js';
import type { ClusterSettings } from '../config.js';
import { ConflictError, errors } from '../errors.js';
import type { Logger } from '../log.js';
import { Coordination } from './coordination.js';
import { fencedCatalog } from './fenced-catalog.js';
import {
  dialPeer,
  PeerRefusedError,
  PeerTimeoutError,
  PeerUnreachableError,
  relay,
  socketRelay,
} from './forward.js';
import type { Hello } from './hello.js';
import { ClusterNode, type Target } from './node.js';
import { type PeerHandlers, PeerListener } from './peer-listener.js';
import { RelayWatch } from './relay-watch.js';
import { rendezvousOwner } from './rendezvous.js';

export { ClusterNode, type Target };

/** What the Postgres front door needs from cluster mode. */
export interface ClusterHooks {
  /** Where the database is served: here (claimed) or on another node. */
  route(id: string): Promise<Target>;
  /** Whether a reply for the database may be sent now (owned, lease provably valid). */
  mayAcknowledge(id: string): boolean;
  /** Relays an authenticated client to the owner; resolves when the session ends. */
  forward(
    client: Socket,
    target: Target & { kind: 'forward' },
    session: ForwardedSession,
    log: Logger,
  ): Promise<void>;
  /** A CancelRequest for a key this node does not know: every live peer gets it. */
  cancelElsewhere(processId: number, secretKey: number): void;
  /** An authenticated session on the owner, for front doors that speak the protocol themselves. */
  dialOwner(
    target: Target & { kind: 'forward' },
    session: Omit<ForwardedSession, 'pipelined'>,
    log: Logger,
  ): Promise<{ socket: Socket; rest: Buffer }>;
}

export interface ForwardedSession {
  db: string;
  user: string;
  params: Record<string, string>;
  pipelined: Buffer;
  /** The verifier the password was checked against (see Hello). */
  storedKey?: string | undefined;
}

export interface ClusterOptions {
  settings: ClusterSettings;
  nodeId: string;
  catalogUrl: string;
  logger: Logger;
  openDatabases: () => number;
  closeDatabase: (id: string) => Promise<void>;
  dataDirOf: (id: string) => string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Cluster mode of one node: membership and ownership (`ClusterNode`), the fence for archive
 * writes, forwarding to owners and the internal listener. Built by the composition root.
 */
export class Cluster implements ClusterHooks {
  readonly node: ClusterNode;
  readonly coordination: Coordination;
  private readonly sql;
  private peers: PeerListener | undefined;
  /** Forwarded sessions, ended when their owner stops answering. */
  private readonly relays: RelayWatch;

  constructor(private readonly opts: ClusterOptions) {
    // Its own small pool: heartbeats never queue behind logins on the catalog's main pool.
    this.sql = openPostgresSqlClient(opts.catalogUrl, {
      onError: (err) => opts.logger.warn({ err }, 'cluster catalog connection error'),
      // A heartbeat with no answer within a lease is worthless: fail it so the next one can try.
      queryTimeoutMs: opts.settings.leaseTtlMs,
    });
    this.coordination = new Coordination(this.sql, opts.nodeId, opts.settings.leaseTtlMs);
    this.relays = new RelayWatch({
      everyMs: Math.max(1000, Math.floor(opts.settings.leaseTtlMs / 2)),
      placementsOf: (ids) => this.coordination.placementsOf(ids),
      ping: (address) => this.ping(address),
      logger: opts.logger.child({ mod: 'cluster' }),
    });
    this.node = new ClusterNode({
      nodeId: opts.nodeId,
      address: opts.settings.address,
      leaseTtlMs: opts.settings.leaseTtlMs,
      coordination: this.coordination,
      logger: opts.logger.child({ mod: 'cluster' }),
      openDatabases: opts.openDatabases,
      closeDatabase: opts.closeDatabase,
      dataDirOf: opts.dataDirOf,
    });
  }

  /** The catalog the archive writers get: WAL and versions fenced by this node's generation. */
  fence = (catalog: Catalog): Catalog => fencedCatalog(catalog, (id) => this.node.fence(id));

  /** Registers the node (its first heartbeat) and starts renewing its lease. */
  start(): Promise<void> {
    return this.node.start();
  }

  /** Opens the internal listener (CLUSTER_PORT) on `host`; returns its port. */
  async listen(host: string, handlers: Omit<PeerHandlers, 'prepareSession' | 'claim'>): Promise<number> {
    this.peers = new PeerListener(
      this.opts.settings.secret,
      {
        ...handlers,
        claim: (hello) => this.node.takeUp(hello.db, BigInt(hello.generation)),
        prepareSession: async (hello) => {
          const target = await this.node.route(hello.db, { forwarded: true });
          if (target.kind !== 'local') throw errors.databaseUnavailable(hello.db);
        },
      },
      this.opts.logger.child({ mod: 'cluster' }),
    );
    return this.peers.listen(this.opts.settings.port, host);
  }

  /** Stops accepting forwarded sessions (those adopted already drain with the gateway listener). */
  async closeListener(): Promise<void> {
    await this.peers?.close();
  }

  /** Stops the heartbeat (after every owned database was closed and released). */
  async stop(): Promise<void> {
    this.relays.stop();
    await this.peers?.close();
    await this.node.stop();
    await this.sql.close();
  }

  route(id: string): Promise<Target> {
    return this.node.route(id);
  }

  mayAcknowledge(id: string): boolean {
    return this.node.mayAcknowledge(id);
  }

  /**
   * Dials the owner (or the preferred node of a free database). An unreachable owner whose lease
   * is still fresh (just killed) is retried until its lease runs out and the database is claimed
   * elsewhere, so the client waits about LEASE_TTL instead of failing.
   */
  async forward(client: Socket, first: Target & { kind: 'forward' }, session: ForwardedSession, log: Logger) {
    const { socket, rest, target } = await this.dialOwnerAt(first, session, log, () => client.destroyed);
    const relayed = relay(client, socket, rest, session.pipelined, log);
    this.relays.watch({ db: session.db, owner: target.nodeId, address: target.address, relay: relayed });
    return relayed.done;
  }

  /**
   * An authenticated session on the database's owner, as a socket speaking the Postgres protocol
   * from just after authentication (the SQL-over-HTTP front door runs its unit over it). Throws
   * `LocalAfterAll` when, meanwhile, this node became the one to serve it.
   */
  async dialOwner(
    first: Target & { kind: 'forward' },
    session: Omit<ForwardedSession, 'pipelined'>,
    log: Logger,
  ): Promise<{ socket: Socket; rest: Buffer }> {
    const { socket, rest, target } = await this.dialOwnerAt(first, session, log);
    // Watched as a relay: an owner that stops answering closes it (the unit fails as unavailable).
    this.relays.watch({
      db: session.db,
      owner: target.nodeId,
      address: target.address,
      relay: socketRelay(socket),
    });
    return { socket, rest };
  }

  /** dialOwner, also saying which node answered. */
  private async dialOwnerAt(
    first: Target & { kind: 'forward' },
    session: Omit<ForwardedSession, 'pipelined'>,
    log: Logger,
    abandoned: () => boolean = () => false,
  ): Promise<{ socket: Socket; rest: Buffer; target: Target & { kind: 'forward' } }> {
    const deadline = performance.now() + this.opts.settings.leaseTtlMs * 2 + 2000;
    let target: Target = first;
    for (let attempt = 0; ; attempt++) {
      if (target.kind === 'local') throw new LocalAfterAll();
      const hello: Hello = {
        kind: 'session',
        from: this.opts.nodeId,
        db: session.db,
        user: session.user,
        params: session.params,
        storedKey: session.storedKey,
      };
      try {
        const dialed = await dialPeer(target.address, this.opts.settings.secret, hello);
        this.node.stats.forwardedSessions++;
        log.info({ owner: target.nodeId }, 'client forwarded to the owner');
        return { ...dialed, target };
      } catch (err) {
        const retryable =
          err instanceof PeerUnreachableError || (err instanceof PeerRefusedError && err.reply.retry);
        if (!retryable || abandoned() || performance.now() > deadline || attempt > 100) {
          if (err instanceof PeerRefusedError) throw errors.databaseUnavailable(session.db);
          throw err instanceof PeerUnreachableError ? errors.databaseUnavailable(session.db) : err;
        }
        log.debug({ err, owner: target.nodeId }, 'owner unreachable; routing again');
        await sleep(Math.min(1000, 100 * 2 ** Math.min(attempt, 4)));
        target = await this.node.route(session.db, {
          avoid: err instanceof PeerUnreachableError ? target.nodeId : undefined,
        });
      }
    }
  }

  /**
   * Hands a database this node owns over to another live node (`db move`): its clients are ended,
   * its last WAL shipped and its snapshot taken as it closes, then it is released and the target
   * claims it (generation + 1). Nothing acknowledged is lost: the target opens from the archive.
   */
  async move(id: string, target: string): Promise<{ owner: string; generation: bigint }> {
    const node = (await this.coordination.nodes()).find((n) => n.id === target && n.alive);
    if (!node) throw new MoveError(`node "${target}" is not a live member of the cluster`, 'not_found');
    const placement = await this.coordination.placement(id);
    if (target === this.opts.nodeId && placement?.owner === target) return this.placed(id);
    if (placement?.owner !== this.opts.nodeId)
      throw new MoveError(
        `database "${id}" is owned by ${placement?.owner ?? 'no node'}: run the move on its owner`,
        'conflict',
      );
    if (target === this.opts.nodeId) return this.placed(id);
    return this.node.handingOver(id, () => this.handOver(id, node.address, target));
  }

  /**
   * Runs an admin command that rewrites a database's files (restore, upload, clone into it,
   * delete): this node must own it, so no other node serves it meanwhile and the new version
   * passes the fence. Claims it when nobody owns it; 409 naming the owner when another live node
   * does.
   */
  async whileLocal<T>(id: string, fn: () => Promise<T>): Promise<T> {
    await this.ensureLocal(id);
    // Closing it for the command must not release it: another node would serve the old data.
    return this.node.pinning(id, fn);
  }

  private async ensureLocal(id: string): Promise<void> {
    try {
      await this.node.ensureOwned(id);
    } catch {
      const owner = (await this.coordination.placement(id).catch(() => undefined))?.owner;
      throw new ConflictError(
        owner && owner !== this.opts.nodeId
          ? `database "${id}" is served by node ${owner}: run this on ${owner}, or move it here first (db move ${id} ${this.opts.nodeId}, on ${owner})`
          : `database "${id}" cannot be claimed by this node now (its owner is changing or the catalog is unreachable); try again`,
      );
    }
  }

  /** A deleted database: this node no longer holds it. */
  forgetLocal(id: string): void {
    this.node.giveUp(id);
  }

  /**
   * `node drain`: this node takes no new databases (its heartbeat says so) and hands every database
   * it owns to the node rendezvous hashing prefers among the other live, non-draining nodes, one
   * after another, each as `move` does. A restart ends the draining state.
   */
  async drain(): Promise<{ database: string; owner?: string; error?: string }[]> {
    this.node.setDraining();
    const others = (await this.coordination.nodes()).filter(
      (n) => n.alive && !n.draining && n.id !== this.opts.nodeId,
    );
    if (others.length === 0) throw new MoveError('no other live node to take the databases', 'conflict');
    const ids = others.map((n) => n.id);
    const outcomes: { database: string; owner?: string; error?: string }[] = [];
    for (const { id } of this.node.ownedDatabases()) {
      const target = rendezvousOwner(id, ids) as string;
      try {
        outcomes.push({ database: id, owner: (await this.move(id, target)).owner });
      } catch (err) {
        outcomes.push({ database: id, error: (err as Error).message });
      }
    }
    return outcomes;
  }

  private async handOver(id: string, address: string, target: string) {
    // Its clients end; the last WAL is shipped and a snapshot taken, fenced by our generation.
    await this.opts.closeDatabase(id);
    const held = this.node.giveUp(id) ?? (await this.coordination.placement(id))?.generation;
    const generation = held === undefined ? undefined : await this.coordination.transfer(id, held, target);
    if (generation === undefined)
      throw new MoveError(`database "${id}" changed owner during the move`, 'conflict');
    const hello: Hello = { kind: 'claim', from: this.opts.nodeId, db: id, generation: generation.toString() };
    try {
      const { socket } = await dialPeer(address, this.opts.settings.secret, hello);
      socket.destroy();
    } catch (err) {
      // The catalog names the target; it takes the database up on its next client (from the archive).
      throw new MoveError(
        `database "${id}" was handed to ${target}, which did not answer: ${(err as Error).message}`,
        'conflict',
      );
    }
    return this.placed(id);
  }

  private async placed(id: string): Promise<{ owner: string; generation: bigint }> {
    const p = await this.coordination.placement(id);
    return { owner: p?.owner ?? '', generation: p?.generation ?? 0n };
  }

  /**
   * Whether the peer at `address` answers a hello. Only silence counts against it: a refusal is an
   * answer, and a refused or reset connection is a draining listener (its adopted sessions go on)
   * or a dead process (whose sessions' sockets close by themselves).
   */
  private async ping(address: string): Promise<boolean> {
    const hello: Hello = { kind: 'ping', from: this.opts.nodeId };
    try {
      const { socket } = await dialPeer(address, this.opts.settings.secret, hello);
      socket.destroy();
      return true;
    } catch (err) {
      return !(err instanceof PeerTimeoutError);
    }
  }

  cancelElsewhere(processId: number, secretKey: number): void {
    void (async () => {
      const nodes = await this.coordination.nodes();
      for (const n of nodes) {
        if (!n.alive || n.id === this.opts.nodeId) continue;
        const hello: Hello = { kind: 'cancel', from: this.opts.nodeId, processId, secretKey, relayed: true };
        await dialPeer(n.address, this.opts.settings.secret, hello).then(
          ({ socket }) => socket.destroy(),
          (err: unknown) => this.opts.logger.debug({ err, peer: n.id }, 'cancel relay failed'),
        );
      }
    })().catch((err: unknown) => this.opts.logger.warn({ err }, 'cancel relay failed'));
  }
}

/** A `db move` that cannot be done: the target is unknown, or this node is not the owner. */
export class MoveError extends Error {
  constructor(
    message: string,
    readonly kind: 'not_found' | 'conflict',
  ) {
    super(message);
  }
}

/** Routing again found that this node should serve the database after all. */
export class LocalAfterAll extends Error {}
