/** What /v1/stats sends (see src/http/stats.ts; kept apart so the browser bundle has no server code). */

export interface DatabaseStats {
  id: string;
  readOnly: boolean;
  poolMode: string | null;
  createdAt: string;
  /** remote: served by another live node (cluster mode). */
  state: 'opening' | 'open' | 'idle' | 'closed' | 'remote';
  clients: number;
  waiting: number;
  tps: number;
  queries: number;
  transactions: number;
  memoryBytes: number | null;
  lastSnapshotAt: string | null;
  lastWalShippedAt: string | null;
  /** null: no node owns it now (cluster mode, released). */
  owner: string | null;
}

export interface NodeStats {
  id: string;
  state: string;
  self: boolean;
  startedAt: string;
  rssBytes: number;
  heapUsedBytes: number;
  openDatabases: number;
  connectedClients: number;
  warmWorkers: number;
  walBacklogBytes: number;
  tps: number;
  latencyMs: number;
}

/** A node of the cluster view; load is null where this node cannot know it (another node's). */
export interface ClusterNodeStats {
  id: string;
  state: 'running' | 'draining' | 'dead';
  self: boolean;
  alive: boolean;
  draining: boolean;
  openDatabases: number;
  ownedDatabases: number;
  heartbeatAgeMs: number | null;
  connectedClients: number | null;
  tps: number | null;
  latencyMs: number | null;
  rssBytes: number | null;
  walBacklogBytes: number | null;
}

export interface ActivityEvent {
  seq: number;
  at: number;
  kind: string;
  db: string;
  detail?: string;
}

export interface StatsSnapshot {
  at: string;
  node: NodeStats;
  cluster: { mode: 'single-node' | 'cluster'; leaseValid?: boolean; nodes: ClusterNodeStats[] };
  databases: DatabaseStats[];
  events: ActivityEvent[];
  history: { at: number; tps: number; latencyMs: number }[];
}

export interface DatabaseDetail {
  id: string;
  readOnly: boolean;
  owner: string | null;
  clients: { id: number; connectedAt: string | null }[];
  latencies: [number, number][];
  queries: number;
  transactions: number;
  lastSnapshotAt: string | null;
  lastSnapshotBytes: number | null;
  lastWalShippedAt: string | null;
  connectionString: string;
  psql: string;
  /** null: no archive configured. */
  versions: { version: string; sizeBytes: number; createdAt: string }[] | null;
  restorable: { earliest: string; latest: string } | null;
}
