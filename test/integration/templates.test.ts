import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/clients.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Templates (issue 18), end to end over the admin API and real TLS node-postgres clients: a
 * template with tables, a view, an enum and a trigger; databases made from it; writer clients that
 * cannot touch what the template owns; migrations at open and `--all`.
 */

const TEMPLATE_SQL = `
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE accounts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email text NOT NULL UNIQUE,
  mood mood NOT NULL DEFAULT 'happy',
  balance numeric(12, 2) NOT NULL DEFAULT 0,
  updated_at timestamptz
);
CREATE TABLE notes (id serial PRIMARY KEY, account_id bigint REFERENCES accounts (id), body text NOT NULL);
CREATE VIEW happy_accounts AS SELECT id, email FROM accounts WHERE mood = 'happy';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER accounts_touch BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
`;

let t: TestServer;
const api = async (method: string, path: string, body?: unknown) => {
  const res = await fetch(`http://127.0.0.1:${t.server.adminPort}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json: json as Record<string, unknown>, text };
};

async function connect(id: string, password: string): Promise<pg.Client> {
  const client = new pg.Client(t.pgConfig(id, password));
  await client.connect();
  return client;
}

async function createFrom(id: string, template: string, extra: Record<string, unknown> = {}) {
  const res = await api('POST', '/v1/databases', { id, template, password: `pw-${id}-password`, ...extra });
  expect(res.status, res.text).toBe(201);
  return `pw-${id}-password`;
}

beforeAll(async () => {
  t = await startTestServer();
  const res = await api('POST', '/v1/templates', { name: 'shop', sql: TEMPLATE_SQL });
  expect(res.status, res.text).toBe(201);
}, 120_000);

afterAll(async () => {
  await t?.close();
});

describe('templates', () => {
  it('databases made from a template have its tables, their own data, and the writer role', async () => {
    const a = await connect('tpl-a', await createFrom('tpl-a', 'shop'));
    const b = await connect('tpl-b', await createFrom('tpl-b', 'shop'));
    try {
      await a.query(`INSERT INTO accounts (email) VALUES ('a@example.com')`);
      const { rows } = await a.query('SELECT email, mood, updated_at FROM accounts');
      expect(rows).toEqual([{ email: 'a@example.com', mood: 'happy', updated_at: expect.any(Date) }]);
      expect((await b.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n).toBe(0);
      expect((await a.query('SELECT * FROM happy_accounts')).rows).toHaveLength(1);
      expect((await a.query('SELECT session_user, current_user')).rows[0]).toEqual({
        session_user: 'gateway_writer',
        current_user: 'gateway_writer',
      });
      await a.query('CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)');
      expect((await a.query('SELECT x FROM mine')).rows).toEqual([{ x: 1 }]);
    } finally {
      await a.end();
      await b.end();
    }
    const listed = await api('GET', '/v1/databases/tpl-a');
    expect(listed.json).toMatchObject({ template: 'shop', templateVersion: 1, roleMode: 'writer' });
  });
});

/** Every way back to the superuser or onto the template's objects, and the SQLSTATE it must fail with. */
const ESCAPES: [string, string][] = [
  ['SET ROLE gateway_template_owner', '42501'],
  ['SET ROLE postgres', '42501'],
  ['BEGIN; SET LOCAL ROLE postgres; COMMIT', '42501'],
  ['SET SESSION AUTHORIZATION postgres', '42501'],
  ["SET session_authorization = 'postgres'", '42501'],
  ['RESET SESSION AUTHORIZATION', '42501'],
  ['SET SESSION AUTHORIZATION DEFAULT', '42501'],
  ['DISCARD ALL', '42501'],
  ["SELECT pg_catalog.set_config('session_authorization', 'postgres', false)", '42501'],
  ["SELECT pg_catalog.set_config('role', 'postgres', false)", '42501'],
  // Functions that would switch identity when called: refused when created (an event trigger reads
  // the body Postgres stored, escapes decoded), or by the language privilege (dynamic SQL).
  [
    "CREATE FUNCTION esc1() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'RESET SESSION AUTHORIZATION'",
    '42501',
  ],
  ["CREATE FUNCTION esc2() RETURNS void LANGUAGE sql AS E'RESET SESSION AUTHORI\\132ATION'", '42501'],
  [
    "CREATE FUNCTION esc3() RETURNS int LANGUAGE sql SET session_authorization = postgres AS 'SELECT 1'",
    '42501',
  ],
  [
    "CREATE FUNCTION esc4() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE 'RESET SESSION ' || 'AUTHORIZATION'; END $$",
    '42501',
  ],
  ["DO $$ BEGIN EXECUTE 'RESET SESSION ' || 'AUTHORIZATION'; DROP TABLE accounts; END $$", '42501'],
  ['ALTER TABLE accounts OWNER TO gateway_writer', '42501'],
  ['ALTER TABLE mine2 OWNER TO postgres', '42501'],
  ['ALTER TYPE mood OWNER TO gateway_writer', '42501'],
  ['CREATE EVENT TRIGGER esc ON ddl_command_start EXECUTE FUNCTION gateway_meta.routine_guard()', '42501'],
  ['ALTER EVENT TRIGGER gateway_routine_guard DISABLE', '42501'],
  ['DROP EVENT TRIGGER gateway_routine_guard', '42501'],
  ['SET session_replication_role = replica', '42501'],
  ["SELECT pg_read_file('PG_VERSION')", '42501'],
  ["SELECT pg_catalog.pg_ls_dir('.')", '42501'],
  // The gateway refuses these itself (feature not supported) before Postgres would (42501).
  ["COPY accounts FROM PROGRAM 'id'", '0A000'],
  ["COPY (SELECT 1) TO PROGRAM 'cat'", '0A000'],
  ["SELECT lo_import('/etc/passwd')", '0A000'],
  // Quoted, too: the statement guard reads names as Postgres does, before the role check.
  [`SELECT "lo_import"('/etc/passwd')`, '0A000'],
  ['DROP TABLE accounts', '42501'],
  ['DROP TABLE notes CASCADE', '42501'],
  ['DROP VIEW happy_accounts', '42501'],
  ['DROP TYPE mood CASCADE', '42501'],
  ['DROP FUNCTION touch() CASCADE', '42501'],
  ['TRUNCATE accounts CASCADE', '42501'],
  ['ALTER TABLE accounts DISABLE TRIGGER accounts_touch', '42501'],
  ['ALTER TABLE accounts DISABLE TRIGGER ALL', '42501'],
  ['ALTER TABLE accounts ADD COLUMN evil int', '42501'],
  ['ALTER TABLE accounts RENAME TO gone', '42501'],
  ["ALTER TYPE mood ADD VALUE 'angry'", '42501'],
  ['CREATE TRIGGER esc BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION touch()', '42501'],
  ['CREATE RULE esc AS ON INSERT TO accounts DO INSTEAD NOTHING', '42501'],
  ['CREATE INDEX ON accounts (mood)', '42501'],
  ["COMMENT ON TABLE accounts IS 'mine'", '42501'],
  ['REINDEX TABLE accounts', '42501'],
  ['ALTER ROLE gateway_writer SUPERUSER', '42501'],
  ['CREATE ROLE esc SUPERUSER', '42501'],
  ['GRANT gateway_template_owner TO gateway_writer', '42501'],
  ['ALTER DEFAULT PRIVILEGES FOR ROLE gateway_template_owner GRANT ALL ON TABLES TO gateway_writer', '42501'],
  ['ALTER SCHEMA public OWNER TO gateway_writer', '42501'],
];

/** What the template owns, as the catalog describes it: must be the same after every escape. */
const TEMPLATE_FINGERPRINT = `
SELECT json_agg(x ORDER BY x)::text AS f FROM (
  SELECT format('%s %s %s %s', c.relname, c.relkind, pg_get_userbyid(c.relowner),
    (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull, ',' ORDER BY a.attnum)
       FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)) AS x
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND pg_get_userbyid(c.relowner) = 'gateway_template_owner'
  UNION ALL SELECT format('trigger %s %s', tgname, tgenabled) FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT format('event trigger %s %s', evtname, evtenabled) FROM pg_event_trigger
  UNION ALL SELECT format('enum %s', string_agg(enumlabel, ',' ORDER BY enumsortorder)) FROM pg_enum
  UNION ALL SELECT format('rule %s', rulename) FROM pg_rules WHERE schemaname = 'public'
  UNION ALL SELECT format('role %s super=%s', rolname, rolsuper) FROM pg_roles WHERE rolname LIKE 'gateway%'
) s`;

describe.each(['session', 'transaction'] as const)('a writer client (%s pool mode)', (poolMode) => {
  it('creates its own objects, and every escape fails with a Postgres error, leaving the template objects unchanged', async () => {
    const id = `esc-${poolMode}`;
    const password = await createFrom(id, 'shop', { poolMode });
    const client = await connect(id, password);
    // Session mode: a client holds the session until it leaves, so the second one comes after.
    let other: pg.Client | undefined;
    try {
      await client.query(`INSERT INTO accounts (email) VALUES ('kept@example.com')`);
      await client.query('CREATE TABLE mine2 (x int); CREATE VIEW mine2_view AS SELECT * FROM mine2');
      await client.query("CREATE FUNCTION double(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2'");
      await client.query('CREATE INDEX ON mine2 (x)');
      await client.query('CREATE TABLE refs (account_id bigint)');
      expect((await client.query('SELECT double(21) AS d')).rows[0].d).toBe(42);
      const before = (await client.query(TEMPLATE_FINGERPRINT)).rows[0].f as string;
      expect(before).toContain('accounts r gateway_template_owner');
      expect(before).toContain('trigger accounts_touch O');

      for (const [sql, code] of ESCAPES) {
        const failed = await client.query(sql).then(
          () => 'succeeded',
          (err: unknown) => codeOf(err),
        );
        expect(failed, sql).toBe(code);
        if (sql.startsWith('BEGIN')) await client.query('ROLLBACK');
        const { rows } = await client.query('SELECT session_user::text AS s, current_user::text AS c');
        expect(rows[0], sql).toEqual({ s: 'gateway_writer', c: 'gateway_writer' });
      }
      // RESET ALL is allowed: it does not reset the session authorization.
      await client.query('RESET ALL');
      expect((await client.query('SELECT session_user::text AS s')).rows[0].s).toBe('gateway_writer');
      await client.end();

      // The next client of the database is the writer too, and finds the template objects as they were.
      other = await connect(id, password);
      expect((await other.query('SELECT session_user::text AS s')).rows[0].s).toBe('gateway_writer');
      expect((await other.query(TEMPLATE_FINGERPRINT)).rows[0].f).toBe(before);
      expect(
        (await other.query('SELECT email, updated_at IS NOT NULL AS touched FROM accounts')).rows,
      ).toEqual([{ email: 'kept@example.com', touched: true }]);
      // DML on the template's tables stays allowed.
      await other.query(`UPDATE accounts SET mood = 'sad'`);
      await other.query('DELETE FROM accounts');
    } finally {
      await client.end().catch(() => undefined);
      await other?.end();
    }
  });
});

describe('template migrations', () => {
  it('migrate databases when they next open; one whose data violates the migration stays usable at its version and is reported', async () => {
    const created = await api('POST', '/v1/templates', {
      name: 'evolve',
      sql: 'CREATE TABLE items (id serial PRIMARY KEY, qty int NOT NULL);',
    });
    expect(created.status, created.text).toBe(201);
    const pw = { ok: await createFrom('mig-ok', 'evolve'), bad: await createFrom('mig-bad', 'evolve') };
    // A read-only database migrates too (its clients still cannot write).
    const ro = await createFrom('mig-ro', 'evolve');
    expect((await api('PATCH', '/v1/databases/mig-ro', { readOnly: true })).json).toMatchObject({
      roleMode: 'reader',
    });
    for (const [id, qty] of [
      ['mig-ok', 5],
      ['mig-bad', -1],
    ] as const) {
      const c = await connect(id, pw[id === 'mig-ok' ? 'ok' : 'bad']);
      await c.query('INSERT INTO items (qty) VALUES ($1)', [qty]);
      await c.end();
      await t.server.registry.close(id);
    }

    const updated = await api('POST', '/v1/templates/evolve/versions', {
      sql: `ALTER TABLE items ADD COLUMN note text;
            ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0);
            CREATE TABLE tags (id serial PRIMARY KEY, name text NOT NULL);`,
    });
    expect(updated.status, updated.text).toBe(200);
    expect(updated.json).toMatchObject({ name: 'evolve', version: 2, databases: 3 });

    // Opens at the new version: the column, the table, and DML rights on the new table.
    const ok = await connect('mig-ok', pw.ok);
    await ok.query(`INSERT INTO tags (name) VALUES ('red')`);
    expect((await ok.query('SELECT qty, note FROM items')).rows).toEqual([{ qty: 5, note: null }]);
    expect(codeOf(await ok.query('DROP TABLE tags').catch((e: unknown) => e))).toBe('42501');
    await ok.end();
    expect((await api('GET', '/v1/databases/mig-ok')).json).toMatchObject({ templateVersion: 2 });
    const reader = await connect('mig-ro', ro);
    expect((await reader.query('SELECT note FROM items')).rows).toEqual([]);
    expect(codeOf(await reader.query(`INSERT INTO tags (name) VALUES ('x')`).catch((e: unknown) => e))).toBe(
      '25006',
    );
    await reader.end();

    // Its data violates the new constraint: the migration rolls back, the database opens as it was.
    const bad = await connect('mig-bad', pw.bad);
    expect((await bad.query('SELECT qty FROM items')).rows).toEqual([{ qty: -1 }]);
    expect(codeOf(await bad.query('SELECT * FROM tags').catch((e: unknown) => e))).toBe('42P01');
    await bad.query('INSERT INTO items (qty) VALUES (7)');
    const reported = (await api('GET', '/v1/databases/mig-bad')).json;
    expect(reported).toMatchObject({ templateVersion: 1, migrationError: expect.stringContaining('23514') });
    const listed = (await api('GET', '/v1/databases')).json.databases as {
      id: string;
      migrationError?: string;
    }[];
    expect(listed.find((d) => d.id === 'mig-bad')?.migrationError).toContain('qty_positive');
    const { register } = await import('prom-client');
    expect(await register.getSingleMetricAsString('pglite_gateway_template_migration_failing')).toMatch(
      /pglite_gateway_template_migration_failing 1$/m,
    );
    expect(await register.getSingleMetricAsString('pglite_gateway_template_migrations_total')).toMatch(
      /outcome="failed"} [1-9]/,
    );

    // Fixed, then `template migrate --all`: every database at the newest version, each outcome listed.
    await bad.query('UPDATE items SET qty = 1 WHERE qty < 0');
    await bad.end();
    const all = await api('POST', '/v1/templates/evolve/migrate');
    expect(all.status, all.text).toBe(200);
    expect(all.json.results).toEqual([
      { id: 'mig-bad', outcome: 'migrated', version: 2 },
      { id: 'mig-ok', outcome: 'current', version: 2 },
      { id: 'mig-ro', outcome: 'current', version: 2 },
    ]);
    expect((await api('GET', '/v1/databases/mig-bad')).json).not.toHaveProperty('migrationError');
    const fixed = await connect('mig-bad', pw.bad);
    expect((await fixed.query('SELECT count(*)::int AS n FROM tags')).rows[0].n).toBe(0);
    await fixed.end();

    // A database made now starts at the newest version (the template was rebuilt).
    const fresh = await connect('mig-new', await createFrom('mig-new', 'evolve'));
    expect((await fresh.query('SELECT count(*)::int AS n FROM tags')).rows[0].n).toBe(0);
    await fresh.end();
    expect((await api('GET', '/v1/databases/mig-new')).json).toMatchObject({ templateVersion: 2 });
  });

  it('refuses a migration that fails on the template itself, and deleting a template in use', async () => {
    const failing = await api('POST', '/v1/templates/evolve/versions', {
      sql: 'ALTER TABLE nowhere ADD COLUMN x int',
    });
    expect(failing.status).toBe(400);
    expect(failing.json.error).toContain('nowhere');
    expect((await api('GET', '/v1/templates/evolve')).json).toMatchObject({ version: 2 });
    expect((await api('POST', '/v1/templates', { name: 'broken', sql: 'CREATE TABLE (' })).status).toBe(400);
    expect((await api('GET', '/v1/templates/broken')).status).toBe(404);
    expect((await api('POST', '/v1/templates', { name: 'evolve', sql: 'SELECT 1' })).status).toBe(409);
    expect((await api('POST', '/v1/templates', { name: 'Bad Name', sql: 'SELECT 1' })).status).toBe(400);
    expect((await api('POST', '/v1/databases', { id: 'no-such', template: 'missing' })).status).toBe(404);

    expect((await api('DELETE', '/v1/templates/evolve')).status).toBe(409);
    for (const id of ['mig-ok', 'mig-bad', 'mig-ro', 'mig-new'])
      expect((await api('DELETE', `/v1/databases/${id}`)).status).toBe(204);
    expect((await api('DELETE', '/v1/templates/evolve')).status).toBe(204);
    expect((await api('GET', '/v1/templates')).json.templates).toEqual([
      expect.objectContaining({ name: 'shop' }),
    ]);
  });
});

describe('extensions for a writer', () => {
  it("creates trusted extensions (Postgres' trusted flag is the allow-list) and no others", async () => {
    const client = await connect('ext-writer', await createFrom('ext-writer', 'shop'));
    try {
      await client.query('CREATE EXTENSION pgcrypto');
      expect((await client.query("SELECT length(gen_salt('bf')) > 0 AS ok")).rows[0].ok).toBe(true);
      // pgvector is not marked trusted: only a superuser may create it.
      expect(codeOf(await client.query('CREATE EXTENSION vector').catch((e: unknown) => e))).toBe('42501');
    } finally {
      await client.end();
    }
  });
});

describe('role modes', () => {
  it('a plain database switched to writer runs its clients as the writer; back to owner, as the superuser', async () => {
    const password = 'plain-role-password';
    expect((await api('POST', '/v1/databases', { id: 'plain-role', password })).status).toBe(201);
    const owner = await connect('plain-role', password);
    await owner.query('CREATE TABLE owned_by_postgres (x int)');
    await owner.end();

    const patched = await api('PATCH', '/v1/databases/plain-role', { roleMode: 'writer' });
    expect(patched.json).toMatchObject({ roleMode: 'writer' });
    const writer = await connect('plain-role', password);
    expect((await writer.query('SELECT session_user::text AS s')).rows[0].s).toBe('gateway_writer');
    await writer.query('CREATE TABLE own (x int)');
    expect(codeOf(await writer.query('DROP TABLE owned_by_postgres').catch((e: unknown) => e))).toBe('42501');
    expect(codeOf(await writer.query('SET SESSION AUTHORIZATION postgres').catch((e: unknown) => e))).toBe(
      '42501',
    );
    await writer.end();

    await api('PATCH', '/v1/databases/plain-role', { roleMode: 'owner' });
    const back = await connect('plain-role', password);
    expect((await back.query('SELECT current_user::text AS c')).rows[0].c).toBe('postgres');
    await back.query('DROP TABLE own, owned_by_postgres');
    await back.end();
  });
});
