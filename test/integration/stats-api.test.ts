import http from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The live stats API and the dashboard's sign-in: everything behind ADMIN_TOKEN (401 without it
 * over TCP), the cookie a browser gets from /dashboard?token= or the sign-in form, the stream,
 * a database's detail, and the actions (close, disconnect; move answers 501 on a single node).
 */

const TOKEN = 'stats-test-token';
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ ADMIN_TOKEN: TOKEN });
});
afterAll(async () => {
  await t?.close();
});

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection (no keep-alive); no redirects followed. */
function request(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: t.server.adminPort, method, path, agent: false, headers },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          data += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const bearer = { authorization: `Bearer ${TOKEN}` };

/** Reads Server-Sent Events until `until` accepts one's data or the deadline passes. */
function readStream(headers: Record<string, string>, until: (data: unknown) => boolean, ms = 15_000) {
  return new Promise<{ status: number; matched: unknown; events: number }>((resolve, reject) => {
    let events = 0;
    const req = http.get(
      { host: '127.0.0.1', port: t.server.adminPort, path: '/v1/stats/stream', agent: false, headers },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return resolve({ status: res.statusCode ?? 0, matched: undefined, events });
        }
        expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
        let buffer = '';
        const timer = setTimeout(() => {
          req.destroy();
          resolve({ status: 200, matched: undefined, events });
        }, ms);
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block
              .split('\n')
              .filter((l) => l.startsWith('data:'))
              .map((l) => l.slice(5).trim())
              .join('\n');
            if (!data) continue;
            events++;
            const parsed = JSON.parse(data) as unknown;
            if (until(parsed)) {
              clearTimeout(timer);
              req.destroy();
              resolve({ status: 200, matched: parsed, events });
              return;
            }
          }
        });
      },
    );
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
  });
}

interface Snapshot {
  node: { id: string; openDatabases: number };
  cluster: { mode: string; nodes: { id: string; self: boolean; alive: boolean; ownedDatabases: number }[] };
  databases: {
    id: string;
    state: string;
    clients: number;
    owner: string;
    queries: number;
    memoryBytes: number | null;
  }[];
  events: { kind: string; db: string; detail?: string }[];
}

describe('authentication', () => {
  it('answers 401 without the token: API, stream, page and script', async () => {
    for (const path of ['/v1/stats', '/v1/stats/stream', '/dashboard/app.js', '/v1/stats/databases/x']) {
      expect((await request('GET', path)).status, path).toBe(401);
    }
    const page = await request('GET', '/dashboard');
    expect(page.status).toBe(401);
    expect(page.body).toContain('<form method="post" action="/dashboard/sign-in">');
    expect((await request('GET', '/v1/stats', { cookie: 'pglite_gateway_admin=forged' })).status).toBe(401);
  });

  it('signs a browser in with ?token= or the form: an HttpOnly, SameSite=Strict cookie', async () => {
    expect((await request('GET', '/dashboard?token=wrong')).status).toBe(401);
    const viaQuery = await request('GET', `/dashboard?token=${TOKEN}`);
    expect(viaQuery.status).toBe(303);
    expect(viaQuery.headers.location).toBe('/dashboard');
    const setCookie = viaQuery.headers['set-cookie']?.[0] ?? '';
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).not.toContain(TOKEN);
    const cookie = setCookie.split(';')[0] as string;

    const form = await request(
      'POST',
      '/dashboard/sign-in',
      { 'content-type': 'application/x-www-form-urlencoded' },
      `token=${TOKEN}`,
    );
    expect(form.status).toBe(303);
    expect(form.headers['set-cookie']?.[0]?.split(';')[0]).toBe(cookie);
    const wrongForm = await request(
      'POST',
      '/dashboard/sign-in',
      { 'content-type': 'application/x-www-form-urlencoded' },
      'token=nope',
    );
    expect(wrongForm.status).toBe(401);

    const page = await request('GET', '/dashboard', { cookie });
    expect(page.status).toBe(200);
    expect(page.body).toContain('/dashboard/app.js');
    const script = await request('GET', '/dashboard/app.js', { cookie });
    expect(script.status).toBe(200);
    expect(script.headers['content-type']).toMatch(/javascript/);
    expect((await request('GET', '/v1/stats', { cookie })).status).toBe(200);
    const stream = await readStream({ cookie }, () => true);
    expect(stream.status).toBe(200);
    expect(stream.matched).toBeDefined();
  });
});

describe('live stats', () => {
  it('streams a database created meanwhile, its clients, and the events', async () => {
    const password = await t.createDatabase('streamed');
    const client = new pg.Client(t.pgConfig('streamed', password));
    await client.connect();
    try {
      await client.query('select 1');
      const seen = await readStream(bearer, (d) => {
        const db = (d as Snapshot).databases.find((x) => x.id === 'streamed');
        return db?.state === 'open' && db.clients === 1 && db.queries >= 1;
      });
      const snap = seen.matched as Snapshot;
      expect(snap).toBeDefined();
      expect(snap.cluster.mode).toBe('single-node');
      expect(snap.cluster.nodes.map((n) => n.id)).toEqual([snap.node.id]);
      expect(snap.cluster.nodes[0]).toMatchObject({ self: true, alive: true });
      expect(snap.cluster.nodes[0]?.ownedDatabases).toBe(snap.databases.length);
      const streamed = snap.databases.find((d) => d.id === 'streamed');
      expect(streamed?.owner).toBe(snap.node.id);
      // Measured by its worker: Postgres' shared memory and contexts plus the worker's JS heap.
      expect(streamed?.memoryBytes).toBeGreaterThan(1024 * 1024);
      expect(streamed?.memoryBytes).toBeLessThan(1024 * 1024 * 1024);
      expect(snap.events.some((e) => e.kind === 'open' && e.db === 'streamed')).toBe(true);
    } finally {
      await client.end();
    }
  });

  it('shows a database detail; disconnects a client and closes a database', async () => {
    const password = await t.createDatabase('acted');
    const client = new pg.Client(t.pgConfig('acted', password));
    const errors: (Error & { code?: string })[] = [];
    client.on('error', (e) => errors.push(e));
    await client.connect();
    await client.query('select 1');
    const detail = JSON.parse((await request('GET', '/v1/stats/databases/acted', bearer)).body) as {
      clients: { id: number }[];
      latencies: [number, number][];
      connectionString: string;
    };
    expect(detail.clients).toHaveLength(1);
    expect(detail.latencies.length).toBeGreaterThan(0);
    expect(detail.connectionString).toContain('acted.');
    expect((await request('DELETE', '/v1/databases/acted/clients/999999', bearer)).status).toBe(404);
    const gone = await request('DELETE', `/v1/databases/acted/clients/${detail.clients[0]?.id}`, bearer);
    expect(gone.status).toBe(204);
    for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(errors[0]?.code).toBe('57P01');
    await client.end().catch(() => undefined);

    expect((await request('POST', '/v1/databases/acted/close', bearer)).status).toBe(204);
    const snap = JSON.parse((await request('GET', '/v1/stats', bearer)).body) as Snapshot;
    expect(snap.databases.find((d) => d.id === 'acted')?.state).toBe('closed');
    expect(snap.events.some((e) => e.kind === 'close' && e.db === 'acted' && e.detail === 'admin')).toBe(
      true,
    );
    expect((await request('POST', '/v1/databases/missing/close', bearer)).status).toBe(404);
  });

  it('forgets a deleted database: gone from /v1/stats and from the node activity', async () => {
    const password = await t.createDatabase('doomed');
    const client = new pg.Client(t.pgConfig('doomed', password));
    client.on('error', () => undefined);
    await client.connect();
    await client.query('select 1');
    await client.end();
    const before = JSON.parse((await request('GET', '/v1/stats', bearer)).body) as Snapshot;
    expect(before.databases.find((d) => d.id === 'doomed')?.queries).toBeGreaterThan(0);
    expect(t.server.registry.activity.peek('doomed')).toBeDefined();

    expect((await request('DELETE', '/v1/databases/doomed', bearer)).status).toBe(204);
    const after = JSON.parse((await request('GET', '/v1/stats', bearer)).body) as Snapshot;
    expect(after.databases.some((d) => d.id === 'doomed')).toBe(false);
    expect(t.server.registry.activity.peek('doomed')).toBeUndefined();
    expect([...t.server.registry.activity.all()].some((a) => a.id === 'doomed')).toBe(false);
    expect((await request('GET', '/v1/stats/databases/doomed', bearer)).status).toBe(404);
  });

  it('answers 501 for cluster actions on a single node and offers no fault actions', async () => {
    expect((await request('POST', '/v1/databases/acted/move', bearer, '{"node":"x"}')).status).toBe(501);
    expect((await request('POST', '/v1/nodes/x/drain', bearer)).status).toBe(501);
    expect(JSON.parse((await request('GET', '/v1/faults', bearer)).body)).toEqual({ actions: [] });
    expect((await request('POST', '/v1/faults/kill', bearer)).status).toBe(404);
  });
});
