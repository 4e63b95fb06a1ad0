/**
 * The cluster view of the live stats: every node the catalog knows with its liveness and load,
 * and how many databases each owns. Another node's load is what its heartbeat carries (open
 * databases); the rest of its load (clients, TPS, memory) is known on that node only, so it is
 * null here: open that node's dashboard for it.
 */

import type { ClusterNodeStats } from './stats-wire.js';

export type { ClusterNodeStats };

/** What the cluster view reads (a Cluster's coordination; one query each). */
export interface ClusterSource {
  /** Every node with a row in the catalog, alive or not. */
  nodes(): Promise<
    readonly {
      id: string;
      alive: boolean;
      draining: boolean;
      openDatabases: number;
      heartbeatAgeMs: number;
    }[]
  >;
  /** Every placement: a database's owner (null once released) and whether that owner is alive. */
  placements(): Promise<readonly { databaseId: string; owner: string | null; ownerAlive: boolean }[]>;
  /** Whether this node can prove its lease now. */
  leaseValid(): boolean;
}

/** The catalog's nodes and placements, as read for one sample. */
export interface ClusterView {
  nodes: Awaited<ReturnType<ClusterSource['nodes']>>;
  placements: Map<string, { owner: string | null; ownerAlive: boolean }>;
}

/** What the view takes from this node's own stats. */
interface SelfStats {
  id: string;
  openDatabases: number;
  connectedClients: number;
  tps: number;
  latencyMs: number;
  rssBytes: number;
  walBacklogBytes: number;
}

/**
 * The nodes of the view: this node with its full load, the others from the catalog. Without a
 * cluster, this node alone, owning all `databases`.
 */
export function clusterNodes(
  self: SelfStats,
  view: ClusterView | undefined,
  databases = 0,
): ClusterNodeStats[] {
  const load = {
    connectedClients: self.connectedClients,
    tps: self.tps,
    latencyMs: self.latencyMs,
    rssBytes: self.rssBytes,
    walBacklogBytes: self.walBacklogBytes,
  };
  if (!view) {
    return [
      {
        id: self.id,
        state: 'running',
        self: true,
        alive: true,
        draining: false,
        openDatabases: self.openDatabases,
        ownedDatabases: databases,
        heartbeatAgeMs: null,
        ...load,
      },
    ];
  }
  const owned = new Map<string, number>();
  for (const p of view.placements.values())
    if (p.owner !== null) owned.set(p.owner, (owned.get(p.owner) ?? 0) + 1);
  const rows = view.nodes.some((n) => n.id === self.id)
    ? view.nodes
    : // Not registered yet (its first heartbeat is under way): still list it.
      [
        { id: self.id, alive: false, draining: false, openDatabases: self.openDatabases, heartbeatAgeMs: 0 },
        ...view.nodes,
      ];
  return rows.map((n) => {
    const isSelf = n.id === self.id;
    return {
      id: n.id,
      state: !n.alive ? 'dead' : n.draining ? 'draining' : 'running',
      self: isSelf,
      alive: n.alive,
      draining: n.draining,
      openDatabases: isSelf ? self.openDatabases : n.openDatabases,
      ownedDatabases: owned.get(n.id) ?? 0,
      heartbeatAgeMs: n.heartbeatAgeMs,
      ...(isSelf
        ? load
        : { connectedClients: null, tps: null, latencyMs: null, rssBytes: null, walBacklogBytes: null }),
    };
  });
}
