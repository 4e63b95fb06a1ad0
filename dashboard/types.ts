/** What /v1/stats sends (see src/http/stats.ts; kept apart so the browser bundle has no server code). */

export interface DatabaseStats {
  id: string;
  readOnly: boolean;
  poolMode: string | null;
  createdAt: string;
  state: 'opening' | 'open' | 'idle' | 'closed';
  clients: number;
  waiting: number;
  tps: number;
  queries: number;
  transactions: number;
  memoryBytes: number | null;
  lastSnapshotAt: string | null;
  lastWalShippedAt: string | null;
  owner: string;
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
  cluster: { mode: string; nodes: NodeStats[] };
  databases: DatabaseStats[];
  events: ActivityEvent[];
  history: { at: number; tps: number; latencyMs: number }[];
}

export interface DatabaseDetail {
  id: string;
  readOnly: boolean;
  owner: string;
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
