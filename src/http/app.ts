import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { type ConnectionInfoInput, connectionInfo } from '../admin/connection-info.js';
import type { DatabaseManager } from '../admin/service.js';
import type { TemplateManager } from '../admin/templates.js';
import { type CreatedDatabaseJson, databaseJson, type PasswordJson } from '../admin/views.js';
import type { DatabaseRegistry } from '../databases/registry.js';
import { RequestError } from '../errors.js';
import type { AuthThrottle } from '../gateway/auth-throttle.js';
import type { Logger } from '../log.js';
import { parseBody } from './body.js';
import { registerClusterRoutes } from './cluster-routes.js';
import { isAuthorized } from './dashboard/auth.js';
import { registerDashboard } from './dashboard/routes.js';
import type { AdminEnv } from './env.js';
import { type LiveDeps, registerLiveRoutes, statsSources } from './live-routes.js';
import { type MetricsSources, registerMetrics } from './metrics.js';
import { refusedOrigin } from './request-origin.js';
import { StatsHub } from './stats.js';
import { registerTemplateRoutes } from './templates-routes.js';
import { DEFAULT_MAX_UPLOAD_BYTES, registerArchiveRoutes, registerUploadRoute } from './versions.js';

/**
 * The admin HTTP API: database lifecycle under /v1, /metrics for Prometheus, /healthz for probes.
 * Served over TCP (bearer token when configured) and over a Unix socket whose requests are
 * trusted (see `http/server.ts`, which marks them through the `trusted` binding).
 */

export interface AdminAppDeps extends MetricsSources, LiveDeps {
  manager: DatabaseManager;
  /** Source of the open-databases gauge; 0 when absent. */
  registry?: DatabaseRegistry | undefined;
  /** Source of the connected-clients gauge; 0 when absent. */
  listener?: { readonly connectionCount: number } | undefined;
  /** Source of the login failure and throttling counters; 0 when absent. */
  authThrottle?: Pick<AuthThrottle, 'counts'> | undefined;
  /** When set, every route but /healthz needs `Authorization: Bearer <token>` unless trusted. */
  token?: string | undefined;
  /** Registry the gauges and default process metrics are registered on (once per registry). */
  metrics: Registry;
  /** Where clients reach a database: domain, port, CA, hostaddr (see `connectionDefaults`). */
  connection: Omit<ConnectionInfoInput, 'id' | 'username' | 'password'>;
  /** Largest uploaded tarball, uncompressed (MAX_UPLOAD_BYTES). Default 100 MB. */
  maxUploadBytes?: number | undefined;
  /** Aborted when the node closes: live streams end (so closing does not wait for them). */
  stopping?: AbortSignal | undefined;
  /** Receives unexpected (500) errors; they never reach the client. */
  logger?: Logger | undefined;
  /** Templates (issue 18); their routes are absent without it. */
  templates?: TemplateManager | undefined;
}

export {
  METRIC_AUTH_FAILURES,
  METRIC_AUTH_THROTTLED,
  METRIC_CONNECTED_CLIENTS,
  METRIC_OPEN_DATABASES,
} from './metrics.js';

const MAX_BODY_BYTES = 64 * 1024;

const CreateBody = z.strictObject({
  id: z.string(),
  readOnly: z.boolean().optional(),
  username: z.string().optional(),
  password: z.string().min(1).max(1024).optional(),
  poolMode: z.enum(['session', 'transaction']).nullable().optional(),
  template: z.string().optional(),
  roleMode: z.enum(['owner', 'writer']).nullable().optional(),
});

const UpdateBody = z.strictObject({
  readOnly: z.boolean().optional(),
  poolMode: z.enum(['session', 'transaction']).nullable().optional(),
  roleMode: z.enum(['owner', 'writer']).nullable().optional(),
});

const PasswordBody = z.strictObject({
  username: z.string().optional(),
  password: z.string().min(1).max(1024).optional(),
});

export function createAdminApp(deps: AdminAppDeps): Hono<AdminEnv> {
  registerMetrics(deps.metrics, deps);
  const { manager } = deps;
  const info = (id: string, username: string, password: string | undefined) =>
    connectionInfo({ ...deps.connection, id, username, password });
  const archiveDeps = { manager, info, maxUploadBytes: deps.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES };

  const app = new Hono<AdminEnv>();

  app.onError((err, c) => {
    if (err instanceof RequestError) return c.json({ error: err.message }, err.status);
    deps.logger?.error({ err, method: c.req.method, path: c.req.path }, 'admin request failed');
    return c.json({ error: 'internal error' }, 500);
  });
  app.notFound((c) => c.json({ error: 'not found' }, 404));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  // Before every route but /healthz (the dashboard's too): requests from web pages of other origins.
  app.use('*', async (c, next) => {
    if (c.env?.trusted) return next();
    const refused = refusedOrigin(
      { host: c.req.header('host'), origin: c.req.header('origin') },
      Boolean(deps.token),
    );
    return refused ? c.json({ error: refused }, 403) : next();
  });

  // The dashboard answers unauthenticated browsers itself (a sign-in form, 401).
  const live = deps.registry ? new StatsHub(statsSources(deps, deps.registry)) : undefined;
  deps.stopping?.addEventListener('abort', () => live?.stop(), { once: true });
  registerDashboard(app, deps.token);

  app.use('*', async (c, next) => {
    const { token } = deps;
    if (token && !c.env?.trusted && !isAuthorized(c, token)) {
      c.header('WWW-Authenticate', 'Bearer');
      return c.json({ error: 'unauthorized' }, 401);
    }
    return next();
  });

  app.get('/metrics', async (c) => {
    const body = await deps.metrics.metrics();
    return c.body(body, 200, { 'Content-Type': deps.metrics.contentType });
  });

  // Streams its body; registered before /v1 so the JSON body limit below does not apply.
  registerUploadRoute(app, archiveDeps);
  if (deps.templates) registerTemplateRoutes(app, { manager, templates: deps.templates });
  if (deps.cluster) registerClusterRoutes(app, deps.cluster, deps.metrics);

  const v1 = new Hono<AdminEnv>();
  v1.use(
    '*',
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) => c.json({ error: `request body exceeds ${MAX_BODY_BYTES} bytes` }, 413),
    }),
  );

  v1.get('/databases', async (c) => c.json({ databases: (await manager.list()).map(databaseJson) }));

  v1.post('/databases', async (c) => {
    const body = await parseBody(c.req, CreateBody);
    const { id, ...opts } = body;
    const created = await manager.create(id, opts);
    const json: CreatedDatabaseJson = {
      id: created.database.id,
      readOnly: created.database.readOnly,
      username: created.username,
      password: created.password,
      ...info(created.database.id, created.username, created.password),
    };
    return c.json(json, 201);
  });

  v1.get('/databases/:id', async (c) => c.json(databaseJson(await manager.get(c.req.param('id')))));

  v1.delete('/databases/:id', async (c) => {
    await manager.delete(c.req.param('id'));
    return c.body(null, 204);
  });

  v1.patch('/databases/:id', async (c) => {
    const body = await parseBody(c.req, UpdateBody);
    return c.json(databaseJson(await manager.update(c.req.param('id'), body)));
  });

  v1.post('/databases/:id/password', async (c) => {
    const id = c.req.param('id');
    const body = await parseBody(c.req, PasswordBody);
    const { username, password } = await manager.passwd(id, body);
    const json: PasswordJson = { username, password, ...info(id, username, password) };
    return c.json(json);
  });

  registerArchiveRoutes(v1, archiveDeps);
  if (live && deps.registry) registerLiveRoutes(v1, { ...deps, registry: deps.registry, hub: live, info });

  app.route('/v1', v1);
  return app;
}
