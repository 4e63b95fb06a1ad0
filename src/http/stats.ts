import type { DatabaseRecord } from '../catalog/catalog.js';
import type { NodeActivity } from '../databases/activity.js';
import type { ClientView, OpenDatabaseView } from '../databases/registry.js';
import { type ClusterSource, type ClusterView, clusterNodes } from './stats-cluster.js';
import type {
  ClusterNodeStats,
  DatabaseDetail,
  DatabaseState,
  DatabaseStats,
  NodeStats,
  StatsSnapshot,
} from './stats-wire.js';

export type { ClusterNodeStats, ClusterSource, DatabaseState, DatabaseStats, NodeStats, StatsSnapshot };

/**
 * The live stats of a node, as GET /v1/stats answers and /v1/stats/stream pushes every second:
 * the node, a cluster view, every database with its state and load, recent events, and the
 * node's TPS and latency over the last minutes. A single node lists itself as the only node; in
 * cluster mode the view lists every node of the catalog and each database's owner, read with one
 * nodes and one placements query at most once a sample, however many watch (stats-cluster.ts).
 */

export interface StatsSources {
  nodeId: string;
  /** Cluster mode: the catalog's nodes and placements; absent on a single node. */
  cluster?: ClusterSource | undefined;
  listDatabases(): Promise<DatabaseRecord[]>;
  registry: {
    readonly activity: NodeActivity;
    openViews(): OpenDatabaseView[];
    clientsOf(id: string): ClientView[];
  };
  listener?: { readonly connectionCount: number } | undefined;
  engines?: { readonly warmCount: number } | undefined;
  walShipping?: { backlogBytes(): number } | undefined;
}

/** Points of the node's TPS and latency history: five minutes at one a second. */
const HISTORY_POINTS = 300;
/** Events a snapshot carries. */
const EVENTS_SENT = 50;
/** A rate is computed over at least this long (requests in between reuse the last sample). */
const MIN_SAMPLE_MS = 900;

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** Samples counters into rates and keeps the history; one per node. */
export class StatsHub {
  private readonly startedAt = Date.now();
  private last = { at: 0, units: 0, unitSeconds: 0, transactions: 0 };
  private lastTx = new Map<string, number>();
  private tps = new Map<string, number>();
  private nodeRate = { tps: 0, latencyMs: 0 };
  private readonly history: StatsSnapshot['history'] = [];
  /** Each subscriber, with what ends it when the hub stops. */
  private readonly subscribers = new Map<(s: StatsSnapshot) => void, () => void>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private clusterCache: { at: number; view: Promise<ClusterView> } | undefined;

  constructor(private readonly src: StatsSources) {}

  /** Updates the rates when the last sample is old enough. */
  private sample(): void {
    const now = Date.now();
    if (now - this.last.at < MIN_SAMPLE_MS) return;
    const totals = this.src.registry.activity.totals;
    const dt = (now - this.last.at) / 1000;
    const first = this.last.at === 0;
    const units = totals.units - this.last.units;
    this.nodeRate = {
      tps: first ? 0 : (totals.transactions - this.last.transactions) / dt,
      latencyMs: units > 0 ? ((totals.unitSeconds - this.last.unitSeconds) * 1000) / units : 0,
    };
    const tps = new Map<string, number>();
    // Rebuilt each sample: a forgotten (deleted) database leaves no entry behind.
    const lastTx = new Map<string, number>();
    for (const a of this.src.registry.activity.all()) {
      const before = this.lastTx.get(a.id);
      if (before !== undefined && !first && a.transactions > before)
        tps.set(a.id, (a.transactions - before) / dt);
      lastTx.set(a.id, a.transactions);
    }
    this.lastTx = lastTx;
    this.tps = tps;
    this.last = {
      at: now,
      units: totals.units,
      unitSeconds: totals.unitSeconds,
      transactions: totals.transactions,
    };
    if (!first) {
      this.history.push({ at: now, ...this.nodeRate });
      if (this.history.length > HISTORY_POINTS) this.history.shift();
    }
  }

  /** The catalog's nodes and placements, read at most once a sample (concurrent callers share it). */
  private clusterView(): Promise<ClusterView> | undefined {
    const source = this.src.cluster;
    if (!source) return undefined;
    const now = Date.now();
    if (this.clusterCache && now - this.clusterCache.at < MIN_SAMPLE_MS) return this.clusterCache.view;
    const view = Promise.all([source.nodes(), source.placements()]).then(([nodes, placements]) => ({
      nodes,
      placements: new Map(placements.map((p) => [p.databaseId, p])),
    }));
    this.clusterCache = { at: now, view };
    // A failed read is not kept: the next request tries again.
    view.catch(() => {
      if (this.clusterCache?.view === view) this.clusterCache = undefined;
    });
    return view;
  }

  async snapshot(): Promise<StatsSnapshot> {
    this.sample();
    const { src } = this;
    const [records, cluster] = await Promise.all([src.listDatabases(), this.clusterView()]);
    const open = new Map(src.registry.openViews().map((v) => [v.id, v]));
    const activity = src.registry.activity;
    const databases = records.map((r): DatabaseStats => {
      const view = open.get(r.id);
      const a = activity.peek(r.id);
      const placement = cluster?.placements.get(r.id);
      const owner = cluster ? (placement?.owner ?? null) : src.nodeId;
      const state: DatabaseState = !view
        ? owner !== null && owner !== src.nodeId && placement?.ownerAlive
          ? 'remote'
          : 'closed'
        : view.state === 'opening'
          ? 'opening'
          : view.clients > 0
            ? 'open'
            : 'idle';
      return {
        id: r.id,
        readOnly: r.readOnly,
        poolMode: r.poolMode,
        createdAt: r.createdAt.toISOString(),
        state,
        clients: view?.clients ?? 0,
        waiting: view?.waiting ?? 0,
        tps: round(this.tps.get(r.id) ?? 0),
        queries: a?.units ?? 0,
        transactions: a?.transactions ?? 0,
        memoryBytes: view?.memoryBytes ?? null,
        lastSnapshotAt: iso(a?.lastSnapshotAt),
        lastWalShippedAt: iso(a?.lastWalShippedAt),
        owner,
      };
    });
    const memory = process.memoryUsage();
    const node: NodeStats = {
      id: src.nodeId,
      state: 'running',
      self: true,
      startedAt: new Date(this.startedAt).toISOString(),
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      openDatabases: open.size,
      connectedClients: src.listener?.connectionCount ?? 0,
      warmWorkers: src.engines?.warmCount ?? 0,
      walBacklogBytes: src.walShipping?.backlogBytes() ?? 0,
      tps: round(this.nodeRate.tps),
      latencyMs: round(this.nodeRate.latencyMs),
    };
    return {
      at: new Date().toISOString(),
      node,
      cluster: cluster
        ? {
            mode: 'cluster',
            leaseValid: src.cluster?.leaseValid() ?? false,
            nodes: clusterNodes(node, cluster),
          }
        : { mode: 'single-node', nodes: clusterNodes(node, undefined, records.length) },
      databases,
      events: activity.recentEvents().slice(-EVENTS_SENT),
      history: [...this.history],
    };
  }

  /** Detail of one database: its clients and recent latencies. */
  detail(
    id: string,
  ): Omit<
    DatabaseDetail,
    'id' | 'readOnly' | 'owner' | 'connectionString' | 'psql' | 'versions' | 'restorable'
  > {
    const a = this.src.registry.activity.peek(id);
    return {
      clients: this.src.registry.clientsOf(id).map((c) => ({ id: c.id, connectedAt: iso(c.connectedAt) })),
      latencies: a?.recentLatencies() ?? [],
      queries: a?.units ?? 0,
      transactions: a?.transactions ?? 0,
      lastSnapshotAt: iso(a?.lastSnapshotAt),
      lastSnapshotBytes: a?.lastSnapshotBytes ?? null,
      lastWalShippedAt: iso(a?.lastWalShippedAt),
    };
  }

  /**
   * Calls `fn` with a snapshot every `intervalMs` (about a second) until the returned function is
   * called. One timer serves every subscriber; it stops when the last one leaves.
   */
  subscribe(fn: (s: StatsSnapshot) => void, onEnd: () => void, intervalMs = 1000): () => void {
    this.subscribers.set(fn, onEnd);
    if (!this.timer) {
      this.timer = setInterval(() => void this.tick(), intervalMs);
      this.timer.unref();
    }
    return () => {
      this.subscribers.delete(fn);
      if (this.subscribers.size === 0) this.stop();
    };
  }

  /** Stops the timer and ends every subscriber (the node is closing: streams end). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    const ends = [...this.subscribers.values()];
    this.subscribers.clear();
    for (const end of ends) end();
  }

  private async tick(): Promise<void> {
    if (this.ticking) return; // a slow catalog: skip a beat rather than pile up
    this.ticking = true;
    try {
      const snapshot = await this.snapshot();
      for (const fn of this.subscribers.keys()) fn(snapshot);
    } catch {
      // The catalog failed this once (closing, restarting): the next tick tries again.
    } finally {
      this.ticking = false;
    }
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
