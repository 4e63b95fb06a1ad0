import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * A deeply nested expression sent as a Parse overflows PGlite's WASM stack, which PGlite catches
 * as an ordinary error and goes on with corrupt state: the statement was reported done with
 * nothing written (a WARNING about a snapshot still active), and the next statement spun for
 * ever. Such output now restarts the database like a FATAL: the client gets an error, never a
 * false success, and the database keeps answering.
 */
describe('a statement that corrupts the engine', () => {
  let gw: TestServer;
  let password = '';

  beforeAll(async () => {
    gw = await startTestServer();
    password = await gw.createDatabase('deep');
    await withClient(gw.pgConfig('deep', password), (c) => c.query('create table deep_ins (v int)'));
  });
  afterAll(() => gw?.close());

  const rows = () =>
    withClient({ ...gw.pgConfig('deep', password), query_timeout: 30_000 }, async (c) => {
      const { rows } = await c.query('select count(*)::int as n from deep_ins');
      return rows[0].n as number;
    });

  it('also when the client turned warnings off (client_min_messages = error)', async () => {
    const before = await rows();
    const sql = `insert into deep_ins values ($1::int + ${Array(1500).fill('1').join('+')})`;
    const outcome = await withClient(
      { ...gw.pgConfig('deep', password), query_timeout: 30_000, options: '-c client_min_messages=error' },
      (c) =>
        c.query(sql, [1]).then(
          (r) => ({ ok: true as const, rowCount: r.rowCount }),
          (err: { code?: string }) => ({ ok: false as const, code: err.code }),
        ),
    );
    const after = await rows();
    if (outcome.ok) expect([outcome.rowCount, after]).toEqual([1, before + 1]);
    else expect(after).toBe(before);
  });

  it.each([1500, 2000, 1500, 3000])(
    '%i terms: an error or a written row, and the database answers after',
    async (terms) => {
      const before = await rows();
      const sql = `insert into deep_ins values ($1::int + ${Array(terms).fill('1').join('+')})`;
      const outcome = await withClient({ ...gw.pgConfig('deep', password), query_timeout: 30_000 }, (c) =>
        c.query(sql, [1]).then(
          (r) => ({ ok: true as const, rowCount: r.rowCount }),
          (err: { code?: string; message: string }) => ({
            ok: false as const,
            code: err.code,
            message: err.message,
          }),
        ),
      );
      const after = await rows();
      if (outcome.ok) {
        expect(outcome.rowCount).toBe(1);
        expect(after).toBe(before + 1);
      } else {
        expect(outcome.message).not.toMatch(/timeout/i);
        expect(after).toBe(before);
      }
    },
  );
});
