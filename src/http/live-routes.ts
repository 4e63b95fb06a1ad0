import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { z } from 'zod';
import type { ConnectionInfo } from '../admin/connection-info.js';
import { type DatabaseManager, DEFAULT_USER, NO_ARCHIVE_MESSAGE } from '../admin/service.js';
import { versionJson } from '../admin/views.js';
import type { Cluster } from '../cluster/cluster.js';
import type { DatabaseRegistry } from '../databases/registry.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../errors.js';
import { parseBody } from './body.js';
import { drainNode, moveDatabase } from './cluster-routes.js';
import type { AdminEnv } from './env.js';
import { type FaultActions, FaultHarnessError } from './fault-control.js';
import type { StatsHub, StatsSources } from './stats.js';
import type { DatabaseDetail } from './stats-wire.js';

/**
 * The live reporting API behind the admin authentication: GET /v1/stats (a snapshot),
 * GET /v1/stats/stream (Server-Sent Events, one `stats` event a second), a database's detail,
 * and the dashboard's actions (close a database, disconnect a client, move a database and drain a
 * node in cluster mode, fault injection in test runs). Moving and draining answer 501 on a single
 * node.
 */

export type { FaultActions };

export interface LiveDeps {
  /** This node's name (NODE_ID): the owner of its databases in the cluster view. */
  nodeId?: string | undefined;
  engines?: { readonly warmCount: number } | undefined;
  walShipping?: { backlogBytes(): number } | undefined;
  /** Cluster mode: GET /v1/cluster, the cluster metrics, the cluster view and moves; absent on a single node. */
  cluster?: Cluster | undefined;
  /**
   * Set only in test/development runs with a fault-injection harness (FAULT_CONTROL_URL): the
   * admin API and the dashboard offer its actions then.
   */
  faults?: FaultActions | undefined;
}

const MoveBody = z.strictObject({ node: z.string().min(1).max(200) });

export function statsSources(
  deps: LiveDeps & { manager: DatabaseManager; listener?: { readonly connectionCount: number } | undefined },
  registry: DatabaseRegistry,
): StatsSources {
  const { cluster } = deps;
  return {
    nodeId: deps.nodeId ?? 'local',
    cluster: cluster && {
      nodes: () => cluster.coordination.nodes(),
      placements: () => cluster.coordination.placements(),
      leaseValid: () => cluster.node.lease.valid(),
    },
    listDatabases: () => deps.manager.list(),
    registry,
    listener: deps.listener,
    engines: deps.engines,
    walShipping: deps.walShipping,
  };
}

/** The versions and restorable range; null without an archive (the page says so, no 400). */
async function versionsOf(manager: DatabaseManager, id: string) {
  try {
    const versions = await manager.versions(id);
    const range = await manager.restorableRange(id);
    return {
      versions: versions.map(versionJson),
      restorable: range
        ? { earliest: range.earliest.toISOString(), latest: range.latest.toISOString() }
        : null,
    };
  } catch (err) {
    if (err instanceof InvalidRequestError && err.message === NO_ARCHIVE_MESSAGE)
      return { versions: null, restorable: null };
    throw err;
  }
}

const NOT_CLUSTERED =
  'this node runs in single-node mode: moving databases and draining nodes need cluster mode';

export function registerLiveRoutes(
  v1: Hono<AdminEnv>,
  deps: LiveDeps & {
    manager: DatabaseManager;
    registry: DatabaseRegistry;
    hub: StatsHub;
    info: (id: string, username: string, password: string | undefined) => ConnectionInfo;
  },
): void {
  const { manager, registry, hub } = deps;

  v1.get('/stats', async (c) => c.json(await hub.snapshot()));

  v1.get('/stats/stream', (c) =>
    streamSSE(c, async (stream) => {
      let id = 0;
      // A reader that stops reading misses snapshots instead of piling them up in memory: one
      // write at a time, and a tick while one is pending is dropped.
      let writing: Promise<void> | undefined;
      const send = (data: unknown) => {
        if (writing) return writing;
        writing = stream
          .writeSSE({ event: 'stats', id: String(++id), data: JSON.stringify(data) })
          .catch(() => undefined)
          .finally(() => {
            writing = undefined;
          });
        return writing;
      };
      await send(await hub.snapshot());
      await new Promise<void>((resolve) => {
        const stop = hub.subscribe((snapshot) => void send(snapshot), resolve);
        stream.onAbort(() => {
          stop();
          resolve();
        });
      });
    }),
  );

  v1.get('/stats/databases/:id', async (c) => {
    const id = c.req.param('id');
    const record = await manager.get(id);
    const owner = deps.cluster
      ? ((await deps.cluster.coordination.placement(id))?.owner ?? null)
      : (deps.nodeId ?? 'local');
    const detail: DatabaseDetail = {
      id,
      readOnly: record.readOnly,
      owner,
      ...hub.detail(id),
      ...(await versionsOf(manager, id)),
      ...deps.info(id, DEFAULT_USER, undefined),
    };
    return c.json(detail);
  });

  v1.post('/databases/:id/close', async (c) => {
    const id = c.req.param('id');
    await manager.get(id);
    await registry.close(id);
    return c.body(null, 204);
  });

  v1.delete('/databases/:id/clients/:client', async (c) => {
    const id = c.req.param('id');
    await manager.get(id);
    if (!registry.disconnect(id, Number(c.req.param('client'))))
      throw new NotFoundError(`client ${c.req.param('client')} of database "${id}" not found`);
    return c.body(null, 204);
  });

  // `db move`, as POST /v1/cluster/move: run on the database's owner (409 elsewhere).
  v1.post('/databases/:id/move', async (c) => {
    const { cluster } = deps;
    if (!cluster) return c.json({ error: NOT_CLUSTERED }, 501);
    const id = c.req.param('id');
    const { node } = await parseBody(c.req, MoveBody);
    await manager.get(id);
    return c.json(await moveDatabase(cluster, id, node));
  });
  // `node drain`, as POST /v1/cluster/drain: a node drains itself (409 for another node).
  v1.post('/nodes/:node/drain', async (c) => {
    const { cluster } = deps;
    if (!cluster) return c.json({ error: NOT_CLUSTERED }, 501);
    const node = c.req.param('node');
    if (node !== cluster.node.nodeId)
      throw new ConflictError(
        `this is ${cluster.node.nodeId}: run the drain of ${node} on ${node}'s admin API`,
      );
    return c.json(await drainNode(cluster));
  });

  v1.get('/faults', async (c) => {
    if (!deps.faults) return c.json({ actions: [] });
    try {
      return c.json({ actions: await deps.faults.actions() });
    } catch (err) {
      if (err instanceof FaultHarnessError) return c.json({ actions: [], error: err.message }, 502);
      throw err;
    }
  });
  v1.post('/faults/:action', async (c) => {
    const action = c.req.param('action');
    const { faults } = deps;
    try {
      if (!faults || !(await faults.actions()).includes(action))
        throw new NotFoundError(`no fault action "${action}"`);
      await faults.run(action, c.req.query('node') ?? deps.nodeId ?? 'local');
    } catch (err) {
      if (err instanceof FaultHarnessError) return c.json({ error: err.message }, err.status);
      throw err;
    }
    return c.body(null, 204);
  });
}
