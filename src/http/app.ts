import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { Counter, collectDefaultMetrics, Gauge, type Registry } from 'prom-client';
import { z } from 'zod';
import { type ConnectionInfoInput, connectionInfo } from '../admin/connection-info.js';
import type { DatabaseManager } from '../admin/service.js';
import { type CreatedDatabaseJson, databaseJson, type PasswordJson } from '../admin/views.js';
import type { DatabaseRegistry } from '../databases/registry.js';
import { RequestError } from '../errors.js';
import type { AuthThrottle } from '../gateway/auth-throttle.js';
import type { Logger } from '../log.js';
import { parseBody } from './body.js';
import type { AdminEnv } from './env.js';
import { DEFAULT_MAX_UPLOAD_BYTES, registerArchiveRoutes, registerUploadRoute } from './versions.js';

/**
 * The admin HTTP API: database lifecycle under /v1, /metrics for Prometheus, /healthz for probes.
 * Served over TCP (bearer token when configured) and over a Unix socket whose requests are
 * trusted (see `http/server.ts`, which marks them through the `trusted` binding).
 */

export interface AdminAppDeps {
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
  /** Receives unexpected (500) errors; they never reach the client. */
  logger?: Logger | undefined;
}

export const METRIC_OPEN_DATABASES = 'pglite_gateway_open_databases';
export const METRIC_CONNECTED_CLIENTS = 'pglite_gateway_connected_clients';
export const METRIC_AUTH_FAILURES = 'pglite_gateway_auth_failures_total';
export const METRIC_AUTH_THROTTLED = 'pglite_gateway_auth_throttled_total';

const MAX_BODY_BYTES = 64 * 1024;

const CreateBody = z.strictObject({
  id: z.string(),
  readOnly: z.boolean().optional(),
  username: z.string().optional(),
  password: z.string().min(1).max(1024).optional(),
  poolMode: z.enum(['session', 'transaction']).nullable().optional(),
});

const UpdateBody = z.strictObject({
  readOnly: z.boolean().optional(),
  poolMode: z.enum(['session', 'transaction']).nullable().optional(),
});

const PasswordBody = z.strictObject({
  username: z.string().optional(),
  password: z.string().min(1).max(1024).optional(),
});

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time: both sides are hashed to equal length first. */
function tokenMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer (.+)$/i.exec(header ?? '');
  return timingSafeEqual(sha256(match?.[1] ?? ''), sha256(token)) && match !== null;
}

function registerMetrics(deps: AdminAppDeps): void {
  const { metrics } = deps;
  if (metrics.getSingleMetric(METRIC_OPEN_DATABASES)) return;
  collectDefaultMetrics({ register: metrics });
  const open: Gauge = new Gauge({
    name: METRIC_OPEN_DATABASES,
    help: 'Databases currently open (a PGlite instance in memory).',
    registers: [metrics],
    collect: () => open.set(deps.registry?.openCount ?? 0),
  });
  const clients: Gauge = new Gauge({
    name: METRIC_CONNECTED_CLIENTS,
    help: 'Postgres client connections currently open on the gateway.',
    registers: [metrics],
    collect: () => clients.set(deps.listener?.connectionCount ?? 0),
  });
  // Counted by the gateway (a lower layer); read here at scrape time.
  const counted = (name: string, help: string, read: (c: AuthThrottle['counts']) => number) => {
    const counter: Counter = new Counter({
      name,
      help,
      registers: [metrics],
      collect: () => {
        counter.reset();
        counter.inc(read(deps.authThrottle?.counts ?? { failures: 0, throttled: 0 }));
      },
    });
  };
  counted(METRIC_AUTH_FAILURES, 'Failed Postgres logins (answered 28P01).', (c) => c.failures);
  counted(METRIC_AUTH_THROTTLED, 'Postgres login attempts delayed by the throttle.', (c) => c.throttled);
}

export function createAdminApp(deps: AdminAppDeps): Hono<AdminEnv> {
  registerMetrics(deps);
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

  app.use('*', async (c, next) => {
    const { token } = deps;
    if (token && !c.env?.trusted && !tokenMatches(c.req.header('authorization'), token)) {
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

  app.route('/v1', v1);
  return app;
}
