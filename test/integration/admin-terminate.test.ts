import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Admin actions that end a database's clients while the server keeps running tell them so as
 * Postgres does for pg_terminate_backend: 57P01 "due to administrator command", not "server shutdown".
 */

let t: TestServer;
let archiveDir: string;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-admin-terminate-'));
  t = await startTestServer({ ARCHIVE_URL: pathToFileURL(archiveDir).href, SNAPSHOT_INTERVAL: '0' });
});
afterAll(async () => {
  await t?.close();
  await rm(archiveDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A connected client (optionally inside a transaction) and the errors it is sent. */
async function connected(id: string, password: string, inTransaction: boolean) {
  const client = new pg.Client(t.pgConfig(id, password));
  const errors: (Error & { code?: string })[] = [];
  client.on('error', (err) => errors.push(err));
  await client.connect();
  await client.query('select 1');
  if (inTransaction) await client.query('begin');
  return {
    async firstError() {
      const deadline = Date.now() + 20_000;
      while (errors.length === 0 && Date.now() < deadline) await sleep(50);
      await client.end().catch(() => undefined);
      return errors[0];
    },
  };
}

async function admin(method: string, url: string, body?: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${t.server.adminPort}${url}`, {
    method,
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  await res.text();
  return res.status;
}

const ADMIN_COMMAND = { code: '57P01', message: 'terminating connection due to administrator command' };

describe('clients ended by admin actions', { timeout: 60_000 }, () => {
  it('PATCH (flags) ends idle and in-transaction clients with the administrator-command message', async () => {
    const password = await t.createDatabase('flags');
    const idle = await connected('flags', password, false);
    const busy = await connected('flags', password, true);
    expect(await admin('PATCH', '/v1/databases/flags', { poolMode: 'session' })).toBe(200);
    expect(await idle.firstError()).toMatchObject(ADMIN_COMMAND);
    expect(await busy.firstError()).toMatchObject(ADMIN_COMMAND);
  });

  it('DELETE ends the clients the same way', async () => {
    const password = await t.createDatabase('gone');
    const client = await connected('gone', password, true);
    expect(await admin('DELETE', '/v1/databases/gone')).toBe(204);
    expect(await client.firstError()).toMatchObject(ADMIN_COMMAND);
  });

  it('restore ends the clients the same way', async () => {
    const password = await t.createDatabase('back');
    const [version] = await t.server.catalog.listVersions('back');
    expect(version).toBeDefined();
    const client = await connected('back', password, false);
    await t.server.manager.restore('back', version?.version as string);
    expect(await client.firstError()).toMatchObject(ADMIN_COMMAND);
  });

  it('a server shutdown still says so', async () => {
    const password = await t.createDatabase('last');
    const client = await connected('last', password, false);
    await t.restart();
    expect(await client.firstError()).toMatchObject({
      code: '57P01',
      message: 'terminating connection due to server shutdown',
    });
  });
});
