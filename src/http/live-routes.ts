import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { ConnectionInfo } from '../admin/connection-info.js';
import { type DatabaseManager, DEFAULT_USER, NO_ARCHIVE_MESSAGE } from '../admin/service.js';
import { versionJson } from '../admin/views.js';
import type { DatabaseRegistry } from '../databases/registry.js';
import { InvalidRequestError, NotFoundError } from '../errors.js';
import type { AdminEnv } from './env.js';
import type { StatsHub, StatsSources } from './stats.js';

/**
 * The live reporting API behind the admin authentication: GET /v1/stats (a snapshot),
 * GET /v1/stats/stream (Server-Sent Events, one `stats` event a second), a database's detail,
 * and the dashboard's actions (close a database, disconnect a client). Moving a database and
 * draining a node need cluster mode and answer 501 until it exists.
 */

/** Fault injection for test and development runs (pause, kill, isolate a node). */
export interface FaultActions {
  /** Action names the dashboard offers, e.g. ['pause', 'kill', 'isolate']. */
  readonly actions: readonly string[];
  run(action: string, node: string): Promise<void>;
}

export interface LiveDeps {
  /** This node's name (NODE_ID): the owner of its databases in the cluster view. */
  nodeId?: string | undefined;
  engines?: { readonly warmCount: number } | undefined;
  walShipping?: { backlogBytes(): number } | undefined;
  /**
   * Set only in test/development runs that have a fault-injection harness; the dashboard shows
   * its actions then. Nothing sets it yet: the harness arrives with cluster mode.
   */
  faults?: FaultActions | undefined;
}

export function statsSources(
  deps: LiveDeps & { manager: DatabaseManager; listener?: { readonly connectionCount: number } | undefined },
  registry: DatabaseRegistry,
): StatsSources {
  return {
    nodeId: deps.nodeId ?? 'local',
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
      const send = (data: unknown) =>
        stream
          .writeSSE({ event: 'stats', id: String(++id), data: JSON.stringify(data) })
          .catch(() => undefined);
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
    return c.json({
      id,
      readOnly: record.readOnly,
      owner: deps.nodeId ?? 'local',
      ...hub.detail(id),
      ...(await versionsOf(manager, id)),
      ...deps.info(id, DEFAULT_USER, undefined),
    });
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

  v1.post('/databases/:id/move', (c) => c.json({ error: NOT_CLUSTERED }, 501));
  v1.post('/nodes/:node/drain', (c) => c.json({ error: NOT_CLUSTERED }, 501));

  v1.get('/faults', (c) => c.json({ actions: deps.faults?.actions ?? [] }));
  v1.post('/faults/:action', async (c) => {
    const action = c.req.param('action');
    if (!deps.faults?.actions.includes(action)) throw new NotFoundError(`no fault action "${action}"`);
    await deps.faults.run(action, c.req.query('node') ?? deps.nodeId ?? 'local');
    return c.body(null, 204);
  });
}
