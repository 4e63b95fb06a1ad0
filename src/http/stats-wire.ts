/**
 * What the live reporting API answers, as JSON: GET /v1/stats (and each event of
 * /v1/stats/stream) and GET /v1/stats/databases/:id. Types only, importing nothing, so the
 * dashboard's browser bundle (dashboard/types.ts) shares them with the server that builds them
 * (stats.ts, stats-cluster.ts, live-routes.ts) and the two cannot drift apart.
 */

/** On this node (opening, open, idle, closed), or `remote`: served by another live node. */
export type DatabaseState = 'opening' | 'open' | 'idle' | 'closed' | 'remote';

export interface DatabaseStats {
  id: string;
  readOnly: boolean;
  poolMode: string | null;
  createdAt: string;
  /**
   * open: has clients; idle: open without clients (closes after IDLE_TIMEOUT); closed: on disk or
   * in the archive only; remote (cluster mode): owned and served by another live node. The
   * counters below are this node's.
   */
  state: DatabaseState;
  clients: number;
  waiting: number;
  /** Transactions per second over the last sample (about a second). */
  tps: number;
  queries: number;
  transactions: number;
  /**
   * What its worker holds, measured by the worker (Postgres shared memory and memory contexts, the
   * worker's JS heap); null when it is not open here.
   */
  memoryBytes: number | null;
  lastSnapshotAt: string | null;
  lastWalShippedAt: string | null;
  /** The node serving it: this node on a single node; the placement's owner in cluster mode (null: none). */
  owner: string | null;
}

export interface NodeStats {
  id: string;
  state: 'running';
  self: boolean;
  startedAt: string;
  rssBytes: number;
  heapUsedBytes: number;
  openDatabases: number;
  connectedClients: number;
  warmWorkers: number;
  walBacklogBytes: number;
  tps: number;
  /** Mean latency of the units of the last sample, in ms. */
  latencyMs: number;
}

export interface StatsSnapshot {
  at: string;
  node: NodeStats;
  cluster: {
    mode: 'single-node' | 'cluster';
    /** Cluster mode: whether this node can prove its lease now (it serves nothing otherwise). */
    leaseValid?: boolean;
    nodes: ClusterNodeStats[];
  };
  databases: DatabaseStats[];
  events: ActivityEventJson[];
  /** One point per sample (about a second), oldest first, the last HISTORY_POINTS. */
  history: { at: number; tps: number; latencyMs: number }[];
}

/** One node in the cluster view; load fields are null where this node cannot know them. */
export interface ClusterNodeStats {
  id: string;
  /** running; draining (takes no new databases); dead (no heartbeat within LEASE_TTL). */
  state: 'running' | 'draining' | 'dead';
  self: boolean;
  alive: boolean;
  draining: boolean;
  /** Open on the node (this node: now; another: as of its last heartbeat). */
  openDatabases: number;
  /** Databases the catalog names it the owner of (a single node: every database). */
  ownedDatabases: number;
  /** Age of its last heartbeat by the catalog's clock; null on a single node. */
  heartbeatAgeMs: number | null;
  connectedClients: number | null;
  tps: number | null;
  latencyMs: number | null;
  rssBytes: number | null;
  walBacklogBytes: number | null;
}

/** An event of the node's activity log (src/databases/activity.ts). */
export interface ActivityEventJson {
  /** Increasing per node: a stream resumes after the last one it sent. */
  seq: number;
  /** Milliseconds since the epoch. */
  at: number;
  kind: 'open' | 'close' | 'error' | 'restart' | 'snapshot' | 'disconnect';
  db: string;
  detail?: string | undefined;
}

/** What the dashboard shows of one database: GET /v1/stats/databases/:id. */
export interface DatabaseDetail {
  id: string;
  readOnly: boolean;
  /** The node serving it (cluster mode: the placement's owner; null: none). */
  owner: string | null;
  /** This node's clients of it, with the id DELETE /v1/databases/:id/clients/:client takes. */
  clients: { id: number; connectedAt: string | null }[];
  /** The recent units, oldest first: [end time in ms since the epoch, latency in ms]. */
  latencies: [number, number][];
  queries: number;
  transactions: number;
  lastSnapshotAt: string | null;
  lastSnapshotBytes: number | null;
  lastWalShippedAt: string | null;
  /** How to connect, without the password (it is not stored). */
  connectionString: string;
  psql: string;
  /** The archive's versions; null when no archive is configured. */
  versions: { version: string; sha256: string; sizeBytes: number; createdAt: string }[] | null;
  restorable: { earliest: string; latest: string } | null;
}
