import { Client } from '@neondatabase/serverless';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { passwordChecks } from '../../src/gateway/password-check.js';
import { neon, neonUrl, useFrontDoor, useWebSocketFrontDoor } from '../helpers/neon.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The cache of successful password checks behind `POST /sql` and WebSocket logins: repeats skip
 * the key derivation, and nothing it remembers outlives a password change or a deleted database.
 * The server runs in this process, so its cache is the `passwordChecks` imported here.
 */
describe('password check cache on the HTTPS front door', () => {
  let gw: TestServer;

  beforeAll(async () => {
    gw = await startTestServer({ AUTH_MAX_DELAY: '0' });
    useFrontDoor(gw);
    useWebSocketFrontDoor(gw);
  });
  afterAll(() => gw?.close());

  const failure = (p: Promise<unknown>) =>
    p.then(
      () => 'succeeded',
      (err: { code?: string }) => err.code,
    );

  it('answers repeated /sql requests from the cache after the first check', async () => {
    const password = await gw.createDatabase('cached');
    const sql = neon(neonUrl('cached', password));
    await sql`select 1`;
    const hits = passwordChecks.hits;
    const misses = passwordChecks.misses;
    for (let i = 0; i < 5; i++) expect(await sql`select ${i}::int as i`).toEqual([{ i }]);
    expect(passwordChecks.hits - hits).toBe(5);
    expect(passwordChecks.misses - misses).toBe(0);
  });

  it('refuses the old password after a change, over /sql and WebSocket', async () => {
    const old = await gw.createDatabase('rotated');
    const ws = async (password: string) => {
      const client = new Client({ connectionString: neonUrl('rotated', password) });
      try {
        await client.connect();
        await client.query('select 1');
      } finally {
        await client.end().catch(() => {});
      }
    };
    // Both front doors have the old password in the cache...
    await neon(neonUrl('rotated', old))`select 1`;
    await ws(old);
    await ws(old);
    const { password: fresh } = await gw.server.manager.passwd('rotated', { password: 'a-new-password-42' });
    // ...and neither accepts it any more.
    expect(await failure(neon(neonUrl('rotated', old))`select 1`)).toBe('28P01');
    expect(await failure(ws(old))).toBe('28P01');
    expect(await neon(neonUrl('rotated', fresh))`select 2 as two`).toEqual([{ two: 2 }]);
    expect(await failure(ws(fresh))).toBe('succeeded');
  });

  it('refuses a deleted database, and a new one with the same id and password is checked afresh', async () => {
    const password = await gw.createDatabase('doomed');
    const sql = neon(neonUrl('doomed', password));
    await sql`create table t (v int)`;
    await sql`select 1`;
    await gw.server.manager.delete('doomed');
    expect(await failure(sql`select 1`)).toBe('28P01');
    await gw.createDatabase('doomed', { password });
    const misses = passwordChecks.misses;
    expect(await failure(sql`select * from t`)).toBe('42P01');
    expect(passwordChecks.misses - misses).toBe(1);
  });

  it('never remembers a wrong password', async () => {
    await gw.createDatabase('guarded');
    const size = passwordChecks.size;
    const misses = passwordChecks.misses;
    for (let i = 0; i < 3; i++) {
      expect(await failure(neon(neonUrl('guarded', 'not-the-password-1'))`select 1`)).toBe('28P01');
    }
    expect(passwordChecks.size).toBe(size);
    expect(passwordChecks.misses - misses).toBe(3);
  });
});
