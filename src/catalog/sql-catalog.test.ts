import { describe, expect, it } from 'vitest';
import type { SqlClient } from './catalog.js';
import { MIGRATIONS, openSqlCatalog } from './sql-catalog.js';

/**
 * A SqlClient that answers the schema-version query with `version`, records every statement and
 * counts closes; `closeFails` makes close reject.
 */
function fakeClient(version: number, closeFails = false) {
  const statements: string[] = [];
  let closes = 0;
  const query = async <Row>(sql: string) => {
    statements.push(sql);
    return { rows: (sql.startsWith('select version') ? [{ version }] : []) as Row[] };
  };
  const client: SqlClient = {
    query,
    transaction: (fn) => fn({ query }),
    close: async () => {
      closes++;
      if (closeFails) throw new Error('close failed too');
    },
  };
  return { client, statements, closes: () => closes };
}

describe('openSqlCatalog', () => {
  it('migrates a fresh catalog and leaves the client open', async () => {
    const fake = fakeClient(0);
    const catalog = await openSqlCatalog(fake.client);
    // After reading the version: every migration's statements in order, then the new version.
    const read = fake.statements.findIndex((s) => s.startsWith('select version'));
    expect(fake.statements.slice(read + 1, -1)).toEqual(MIGRATIONS.flat());
    expect(fake.statements.at(-1)).toMatch(/^update gateway_schema_version/);
    expect(fake.closes()).toBe(0);
    await catalog.close();
    expect(fake.closes()).toBe(1);
  });

  it('closes the client and throws the migration error, not the close error', async () => {
    const fake = fakeClient(MIGRATIONS.length + 1, true);
    await expect(openSqlCatalog(fake.client)).rejects.toThrow(/newer than this server supports/);
    expect(fake.closes()).toBe(1);
  });
});
