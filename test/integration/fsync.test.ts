import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * FSYNC (issue 14): with `on`, the WAL a commit wrote is fdatasync'ed in the database's worker
 * before the reply leaves it, so by the time a client has its CommandComplete the sync happened;
 * data files are synced before a checkpoint is recorded. With `off`, nothing is synced.
 */

describe.each([
  ['on', true],
  ['off', false],
])('FSYNC=%s', (mode, syncs) => {
  let t: TestServer;
  let pw: string;
  beforeAll(async () => {
    t = await startTestServer({ FSYNC: mode });
    pw = await t.createDatabase('durable');
  });
  afterAll(() => t?.close());

  it(syncs ? 'flushes the WAL of every commit before acknowledging it' : 'never syncs', async () => {
    await withClient(t.pgConfig('durable', pw), async (c) => {
      await c.query('create table if not exists ledger (n int)');
      for (let i = 0; i < 20; i++) {
        const before = t.server.engines.syncs.wal;
        await c.query('insert into ledger values ($1)', [i]);
        const after = t.server.engines.syncs.wal;
        // Read right after the acknowledgement: the sync already happened, or never will.
        if (syncs) expect(after, `commit ${i}`).toBeGreaterThan(before);
        else expect(after).toBe(0);
      }
      // A transaction's statements before COMMIT wrote no commit record that needs a wait.
      const dataBefore = t.server.engines.syncs.data;
      await c.query('checkpoint');
      if (syncs) expect(t.server.engines.syncs.data).toBeGreaterThan(dataBefore);
      else expect(t.server.engines.syncs.data).toBe(0);
      expect((await c.query('select count(*)::int as n from ledger')).rows[0].n).toBe(20);
    });
  });
});
