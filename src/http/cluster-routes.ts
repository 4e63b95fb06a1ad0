import type { Hono } from 'hono';
import { Gauge, type Registry } from 'prom-client';
import { z } from 'zod';
import { type Cluster, MoveError } from '../cluster/cluster.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { parseBody } from './body.js';
import type { AdminEnv } from './env.js';

/**
 * Cluster mode's admin view: `GET /v1/cluster` (the nodes with liveness and load, every placement
 * with its owner and generation, this node's counters) and its Prometheus series.
 */

const P = 'pglite_gateway_cluster_';

const MoveBody = z.strictObject({ database: z.string(), node: z.string() });

/**
 * `db move` on this node, the database's owner: 404 for an unknown or dead target node, 409 when
 * this node does not own the database (or it changed owner meanwhile). POST /v1/cluster/move and
 * the dashboard's move (POST /v1/databases/:id/move) both run it.
 */
export async function moveDatabase(cluster: Cluster, database: string, node: string) {
  try {
    const placed = await cluster.move(database, node);
    return { database, owner: placed.owner, generation: placed.generation.toString() };
  } catch (err) {
    if (err instanceof MoveError)
      throw err.kind === 'not_found' ? new NotFoundError(err.message) : new ConflictError(err.message);
    throw err;
  }
}

/**
 * `node drain` on this node: it takes no new databases and hands each one it owns to another live
 * node (409 when there is none). POST /v1/cluster/drain and the dashboard's drain
 * (POST /v1/nodes/:node/drain) both run it.
 */
export async function drainNode(cluster: Cluster) {
  try {
    return { node: cluster.node.nodeId, databases: await cluster.drain() };
  } catch (err) {
    if (err instanceof MoveError) throw new ConflictError(err.message);
    throw err;
  }
}

export function registerClusterRoutes(app: Hono<AdminEnv>, cluster: Cluster, metrics: Registry): void {
  app.get('/v1/cluster', async (c) => {
    const [nodes, placements] = await Promise.all([
      cluster.coordination.nodes(),
      cluster.coordination.placements(),
    ]);
    return c.json({
      node: cluster.node.nodeId,
      leaseValid: cluster.node.lease.valid(),
      stats: cluster.node.stats,
      nodes,
      placements: placements.map((p) => ({
        databaseId: p.databaseId,
        owner: p.owner,
        ownerAlive: p.ownerAlive,
        generation: p.generation.toString(),
      })),
    });
  });

  // `db move`: run on the database's owner; the target claims it once its last WAL is shipped.
  app.post('/v1/cluster/move', async (c) => {
    const { database, node } = await parseBody(c.req, MoveBody);
    return c.json(await moveDatabase(cluster, database, node));
  });

  // `node drain`: run on the node to drain; answers once every owned database was handed over.
  app.post('/v1/cluster/drain', async (c) => c.json(await drainNode(cluster)));

  const reading = (name: string, help: string, read: () => number) => {
    const gauge: Gauge = new Gauge({
      name: `${P}${name}`,
      help,
      registers: [metrics],
      collect: () => gauge.set(read()),
    });
  };
  const stats = cluster.node.stats;
  reading('owned_databases', 'Databases this node owns now', () => cluster.node.ownedDatabases().length);
  reading('lease_valid', '1 while this node can prove its lease, else 0', () =>
    cluster.node.lease.valid() ? 1 : 0,
  );
  // Monotonic counts since start (exposed as gauges read at scrape time; `rate()` works the same).
  reading('claims_total', 'Databases claimed by this node', () => stats.claims);
  reading(
    'failovers_total',
    'Claims that took a database over from a node whose lease ran out',
    () => stats.failovers,
  );
  reading('lost_total', 'Databases this node stopped serving because its ownership ended', () => stats.lost);
  reading(
    'forwarded_sessions_total',
    'Client sessions forwarded to another node',
    () => stats.forwardedSessions,
  );
  reading('releases_total', 'Databases released after their last WAL was shipped', () => stats.releases);
}
