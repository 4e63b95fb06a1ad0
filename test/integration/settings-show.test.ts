import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHOW_SAVEPOINT, showSettingsSql } from '../../src/pooler/setting-values.js';
import { firstColumn, hasError, lastReadyStatus } from '../../src/wire/backend-scan.js';
import { query } from '../../src/wire/protocol.js';

/**
 * The read-back by SHOW that the pooler runs inside a transaction that has taken no snapshot yet
 * (session-units.ts showSettings), against the engine itself: it takes no snapshot, its values come
 * back in order, and a name that is not defined fails only its savepoint.
 */

let db: PGlite;
beforeAll(async () => {
  db = await PGlite.create();
});
afterAll(() => db?.close());

const run = (sql: string) => db.execProtocolRaw(query(sql));

describe('a read-back by SHOW', () => {
  it('reads each value in order and leaves the isolation level free to set', async () => {
    await run('BEGIN');
    await run("SET LOCAL statement_timeout = '1500ms'; SET app.tenant = 'a'");
    const response = await run(showSettingsSql(['statement_timeout', 'TimeZone', 'app.tenant', 'DateStyle']));
    expect(hasError(response)).toBe(false);
    expect(firstColumn(response)).toEqual(['1500ms', 'UTC', 'a', 'ISO, MDY']);
    expect(lastReadyStatus(response)).toBe('T');
    expect(hasError(await run('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE'))).toBe(false);
    expect(firstColumn(await run('SHOW transaction_isolation'))).toEqual(['serializable']);
    await run('ROLLBACK');
  });

  it('fails only its savepoint on a name that is not defined', async () => {
    await run('BEGIN');
    await run("SET LOCAL work_mem = '2MB'");
    const failed = await run(showSettingsSql(['work_mem', 'nobody.set_this']));
    expect(hasError(failed)).toBe(true);
    expect(lastReadyStatus(failed)).toBe('E');
    const back = await run(`ROLLBACK TO SAVEPOINT ${SHOW_SAVEPOINT}; RELEASE ${SHOW_SAVEPOINT}`);
    expect(lastReadyStatus(back)).toBe('T');
    // The client's transaction and its settings are as they were, and still without a snapshot.
    expect(hasError(await run('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ'))).toBe(false);
    expect(firstColumn(await run('SHOW work_mem'))).toEqual(['2MB']);
    expect(lastReadyStatus(await run('COMMIT'))).toBe('I');
  });

  it('quotes each part of a name, and finds it whatever its case', async () => {
    await run(`BEGIN; SET "App"."Mode" = 'v'; SET LOCAL "DateStyle" = 'German'`);
    expect(firstColumn(await run(showSettingsSql(['App.Mode', 'app.mode', 'datestyle'])))).toEqual([
      'v',
      'v',
      'German, DMY',
    ]);
    await run('ROLLBACK');
  });
});
