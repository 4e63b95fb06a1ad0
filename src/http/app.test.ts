import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DatabaseManager, NO_ARCHIVE_MESSAGE } from '../admin/service.js';
import type { CreatedDatabaseJson, DatabaseJson, PasswordJson, UploadedJson } from '../admin/views.js';
import type { Catalog } from '../catalog/catalog.js';
import { openEmbeddedCatalog } from '../catalog/embedded.js';
import { DatabaseRegistry } from '../databases/registry.js';
import { postgresSettings } from '../engine/engine.js';
import { EngineHost } from '../engine/engine-host.js';
import { packDataDir } from '../pgdata/tarball.js';
import {
  type AdminAppDeps,
  createAdminApp,
  METRIC_AUTH_FAILURES,
  METRIC_AUTH_THROTTLED,
  METRIC_CONNECTED_CLIENTS,
  METRIC_OPEN_DATABASES,
} from './app.js';

let root = '';
let dataDir = '';
let catalog: Catalog;
let deps: AdminAppDeps;
let app: ReturnType<typeof createAdminApp>;

const connection = { domain: 'db.test', port: 6543, caPath: '/tls/ca.pem', hostaddr: '127.0.0.1' };
const json = (body: unknown) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'admin-app-'));
  dataDir = path.join(root, 'dbs');
  const templateDir = inject('templateDir');
  catalog = await openEmbeddedCatalog({ dir: path.join(dataDir, '_catalog'), templateDir });
  const logger = pino({ level: 'silent' });
  const registry = new DatabaseRegistry({
    engines: new EngineHost({ warm: 0, settings: postgresSettings(8 * 1024 * 1024) }),
    dataDir,
    maxClientsPerDb: 10,
    queryWaitTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
    maxOpenDatabases: 10,
    maxMemoryBytes: 0,
    logger,
  });
  const manager = new DatabaseManager({ catalog, registry, dataDir, templateDir });
  deps = {
    manager,
    registry,
    listener: { connectionCount: 3 },
    metrics: new Registry(),
    connection,
    logger,
  };
  app = createAdminApp(deps);
});

afterAll(async () => {
  await catalog?.close();
  await rm(root, { recursive: true, force: true });
});

describe('admin app', () => {
  it('answers /healthz', async () => {
    const res = await app.request('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('creates a database with a generated password and connection info', async () => {
    const res = await app.request('/v1/databases', json({ id: 'alpha' }));
    expect(res.status).toBe(201);
    const body = (await res.json()) as CreatedDatabaseJson;
    expect(body).toMatchObject({ id: 'alpha', readOnly: false, username: 'postgres' });
    expect(body.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(body.connectionString).toBe(
      `postgres://postgres:${body.password}@alpha.db.test:6543/postgres?sslmode=verify-full&sslrootcert=/tls/ca.pem`,
    );
    expect(body.psql).toContain('host=alpha.db.test hostaddr=127.0.0.1 port=6543 user=postgres');
    expect((await stat(path.join(dataDir, 'alpha', 'PG_VERSION'))).isFile()).toBe(true);
    expect(await catalog.getCredential('alpha', 'postgres')).toBeDefined();
  });

  it('creates read-only databases with given credentials', async () => {
    const res = await app.request(
      '/v1/databases',
      json({ id: 'beta', readOnly: true, username: 'app', password: 's3cret!-password' }),
    );
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({
      id: 'beta',
      readOnly: true,
      username: 'app',
      password: 's3cret!-password',
    });
  });

  it('rejects a duplicate id with 409', async () => {
    const res = await app.request('/v1/databases', json({ id: 'alpha' }));
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual({ error: expect.stringContaining('alpha') });
  });

  it.each(['../x', 'A', 'a'.repeat(64), '', '-a'])('rejects the id %j with 400', async (id) => {
    const res = await app.request('/v1/databases', json({ id }));
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: expect.stringContaining('database ids are') });
  });

  it('rejects malformed bodies with 400', async () => {
    const cases = [
      { method: 'POST', body: '{not json' },
      json({}),
      json({ id: 'gamma', readOnly: 'yes' }),
      json({ id: 'gamma', extra: 1 }),
      json({ id: 'gamma', username: '../bad user' }),
      json({ id: 'gamma', poolMode: 'statement' }),
    ];
    for (const init of cases) {
      const res = await app.request('/v1/databases', init);
      expect(res.status, String(init.body)).toBe(400);
      expect(Object.keys((await res.json()) as object)).toEqual(['error']);
    }
    expect(await catalog.getDatabase('gamma')).toBeUndefined();
  });

  it('gets and lists databases', async () => {
    const one = await app.request('/v1/databases/alpha');
    expect(one.status).toBe(200);
    const record = (await one.json()) as DatabaseJson;
    expect(record).toMatchObject({ id: 'alpha', readOnly: false, poolMode: null });
    expect(Number.isNaN(Date.parse(record.createdAt))).toBe(false);

    const list = await app.request('/v1/databases');
    const { databases } = (await list.json()) as { databases: DatabaseJson[] };
    expect(databases.map((d) => d.id).sort()).toEqual(['alpha', 'beta']);
  });

  it('answers 404 for unknown databases and routes', async () => {
    for (const [method, url] of [
      ['GET', '/v1/databases/nope'],
      ['DELETE', '/v1/databases/nope'],
      ['POST', '/v1/databases/nope/password'],
      ['GET', '/v1/databases/NOPE'],
      ['GET', '/v1/nothing'],
    ] as const) {
      const res = await app.request(url, { method });
      expect(res.status, `${method} ${url}`).toBe(404);
      expect(await res.json()).toEqual({ error: expect.any(String) });
    }
  });

  it('rotates passwords', async () => {
    const before = await catalog.getCredential('alpha', 'postgres');
    const res = await app.request('/v1/databases/alpha/password', { method: 'POST' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as PasswordJson;
    expect(body.username).toBe('postgres');
    expect(body.connectionString).toContain(`postgres:${body.password}@alpha.db.test`);
    expect((await catalog.getCredential('alpha', 'postgres'))?.scram).not.toEqual(before?.scram);

    const other = await app.request(
      '/v1/databases/alpha/password',
      json({ username: 'reader', password: 'p w p w p w p w' }),
    );
    expect(await other.json()).toMatchObject({ username: 'reader', password: 'p w p w p w p w' });
    expect(await catalog.getCredential('alpha', 'reader')).toBeDefined();
  });

  it('refuses passwords shorter than MIN_PASSWORD_LENGTH with 400', async () => {
    for (const [url, body] of [
      ['/v1/databases', { id: 'shorty', password: 'x' }],
      ['/v1/databases', { id: 'shorty', password: '12345678901' }],
      ['/v1/databases/alpha/password', { password: 'elevenchars' }],
    ] as const) {
      const res = await app.request(url, json(body));
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toEqual({ error: 'password must be at least 12 characters long' });
    }
    expect(await catalog.getDatabase('shorty')).toBeUndefined();
  });

  it('refuses bad user names on password changes, and passwords no client can send, with 400', async () => {
    for (const [url, body] of [
      ['/v1/databases/alpha/password', { username: '' }],
      ['/v1/databases/alpha/password', { username: 'x\u0001y' }],
      ['/v1/databases/alpha/password', { username: 'postgres\u0000' }],
      ['/v1/databases/alpha/password', { username: '\ud800' }],
      ['/v1/databases/alpha/password', { username: 'u'.repeat(64) }],
      ['/v1/databases/alpha/password', { password: 'long enough but \u0000' }],
      ['/v1/databases', { id: 'surrogate', password: '\ud800password-1234567' }],
    ] as const) {
      const res = await app.request(url, json(body));
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    expect(await catalog.getDatabase('surrogate')).toBeUndefined();
    expect(await catalog.getCredential('alpha', '')).toBeUndefined();
  });

  it('runs creates and deletes of one id one at a time: 201 then 409, no directory without an entry', async () => {
    const create = () => app.request('/v1/databases', json({ id: 'racing' }));
    const statuses = await Promise.all([create(), create()]).then((all) => all.map((r) => r.status).sort());
    expect(statuses).toEqual([201, 409]);
    for (let round = 0; round < 3; round++) {
      const del = app.request('/v1/databases/racing', { method: 'DELETE' });
      const again = create();
      // In call order: the delete, then the create.
      expect([(await del).status, (await again).status]).toEqual([204, 201]);
    }
    const exists = async () =>
      stat(path.join(dataDir, 'racing')).then(
        () => true,
        () => false,
      );
    expect(Boolean(await catalog.getDatabase('racing'))).toBe(true);
    expect(await exists()).toBe(true);
    await Promise.all([app.request('/v1/databases/racing', { method: 'DELETE' }), create()]);
    expect(Boolean(await catalog.getDatabase('racing'))).toBe(await exists());
  });

  it('deletes databases with 204', async () => {
    const res = await app.request('/v1/databases/beta', { method: 'DELETE' });
    expect(res.status).toBe(204);
    expect(await res.text()).toBe('');
    expect(await catalog.getDatabase('beta')).toBeUndefined();
    await expect(stat(path.join(dataDir, 'beta'))).rejects.toThrow();
    expect((await app.request('/v1/databases/beta')).status).toBe(404);
  });

  it('hides unexpected errors behind a 500', async () => {
    const broken = createAdminApp({
      ...deps,
      manager: {
        list: async () => {
          throw new Error('secret detail at /var/lib');
        },
      } as unknown as DatabaseManager,
    });
    const res = await broken.request('/v1/databases');
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: 'internal error' });
  });

  it('exposes live gauges and process metrics on /metrics', async () => {
    const res = await app.request('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toContain(`${METRIC_OPEN_DATABASES} 0`);
    expect(text).toContain(`${METRIC_CONNECTED_CLIENTS} 3`);
    expect(text).toContain('process_cpu_user_seconds_total');
    (deps.listener as { connectionCount: number }).connectionCount = 5;
    expect(await (await app.request('/metrics')).text()).toContain(`${METRIC_CONNECTED_CLIENTS} 5`);
    expect(text).toContain(`${METRIC_AUTH_FAILURES} 0`);
  });

  it('exposes the gateway login counters', async () => {
    const counts = { failures: 7, throttled: 2 };
    const counted = createAdminApp({ ...deps, metrics: new Registry(), authThrottle: { counts } });
    const text = await (await counted.request('/metrics')).text();
    expect(text).toContain(`# TYPE ${METRIC_AUTH_FAILURES} counter`);
    expect(text).toContain(`${METRIC_AUTH_FAILURES} 7`);
    expect(text).toContain(`${METRIC_AUTH_THROTTLED} 2`);
    counts.failures = 9;
    expect(await (await counted.request('/metrics')).text()).toContain(`${METRIC_AUTH_FAILURES} 9`);
  });
});

describe('archive routes without an archive', () => {
  it('answers versions, restore and clone with 400', async () => {
    for (const [url, init] of [
      ['/v1/databases/alpha/versions', {}],
      ['/v1/databases/alpha/restore', json({ version: '20250101T000000000Z-00000000' })],
      ['/v1/databases/alpha/clone', json({ id: 'alpha2' })],
    ] as const) {
      const res = await app.request(url, init);
      expect(res.status, url).toBe(400);
      expect(await res.json()).toEqual({ error: NO_ARCHIVE_MESSAGE });
    }
  });

  it('installs an uploaded tarball locally, streamed past the JSON body limit', async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of packDataDir(inject('templateDir'))) chunks.push(chunk as Buffer);
    const tarball = Buffer.concat(chunks);
    expect(tarball.length).toBeGreaterThan(64 * 1024);
    const res = await app.request('/v1/databases/uploaded/upload?create=1', { method: 'PUT', body: tarball });
    expect(res.status).toBe(201);
    const body = (await res.json()) as UploadedJson;
    expect(body).toMatchObject({ id: 'uploaded', created: true, username: 'postgres', version: null });
    expect(body.connectionString).toContain(`postgres:${body.password}@uploaded.db.test:6543/`);
    expect((await stat(path.join(dataDir, 'uploaded', 'PG_VERSION'))).isFile()).toBe(true);

    const again = await app.request('/v1/databases/uploaded/upload', { method: 'PUT', body: tarball });
    expect(again.status).toBe(200);
    const replaced = (await again.json()) as UploadedJson;
    expect(replaced).toMatchObject({ created: false, version: null });
    expect(replaced.password).toBeUndefined();
    expect(replaced.connectionString).toContain('postgres://postgres@uploaded.db.test:6543/');
  });

  it('rejects bad uploads and leaves nothing behind', async () => {
    const junk = Buffer.alloc(100 * 1024, 1);
    const cases: [string, RequestInit, number][] = [
      ['/v1/databases/junk/upload?create=1', { method: 'PUT', body: junk }, 400],
      ['/v1/databases/junk/upload?create=1', { method: 'PUT' }, 400],
      ['/v1/databases/junk/upload?create=maybe', { method: 'PUT', body: junk }, 400],
      ['/v1/databases/junk/upload', { method: 'PUT', body: junk }, 404],
      ['/v1/databases/Junk/upload?create=1', { method: 'PUT', body: junk }, 400],
      ['/v1/databases/alpha/upload?create=1', { method: 'PUT', body: junk }, 409],
    ];
    for (const [url, init, status] of cases) {
      const res = await app.request(url, init);
      expect(res.status, url).toBe(status);
      expect(Object.keys((await res.json()) as object)).toEqual(['error']);
    }
    expect(await catalog.getDatabase('junk')).toBeUndefined();
    expect((await readdir(dataDir)).filter((n) => n.includes('junk'))).toEqual([]);

    const small = createAdminApp({ ...deps, maxUploadBytes: 10 * 1024 });
    const tooLarge = await small.request('/v1/databases/junk/upload?create=1', {
      method: 'PUT',
      body: junk,
      headers: { 'content-length': String(junk.length) },
    });
    expect(tooLarge.status).toBe(413);
    // Without a length up front, the limit applies to the contents as they stream in.
    const streamed = await small.request('/v1/databases/junk/upload?create=1', {
      method: 'PUT',
      body: packDataDir(inject('templateDir')) as unknown as RequestInit['body'],
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toEqual({ error: expect.stringMatching(/^upload rejected: .*exceed/) });
    expect(await catalog.getDatabase('junk')).toBeUndefined();
  });
});

describe('admin app with a token', () => {
  const token = 'tok-123';
  let secured: ReturnType<typeof createAdminApp>;
  beforeAll(() => {
    secured = createAdminApp({ ...deps, token });
  });

  it('requires the bearer token everywhere but /healthz', async () => {
    expect((await secured.request('/healthz')).status).toBe(200);
    for (const url of ['/v1/databases', '/metrics', '/v1/databases/alpha', '/v1/missing']) {
      const res = await secured.request(url);
      expect(res.status, url).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(await res.json()).toEqual({ error: 'unauthorized' });
    }
    for (const header of ['Bearer wrong', `Basic ${token}`, token, 'Bearer ', `Bearer ${token}x`]) {
      const res = await secured.request('/v1/databases', { headers: { authorization: header } });
      expect(res.status, header).toBe(401);
    }
  });

  it('accepts the right token, and trusted (Unix socket) requests without one', async () => {
    const res = await secured.request('/v1/databases', { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const metrics = await secured.request('/metrics', { headers: { authorization: `bearer ${token}` } });
    expect(metrics.status).toBe(200);
    expect((await secured.request('/v1/databases', {}, { trusted: true })).status).toBe(200);
  });
});
