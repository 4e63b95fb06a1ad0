import { readdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorFields, readUntilClose, startupMessage, tlsConnect } from '../helpers/raw.js';
import { psql, sqlstateOf, startTestServer, type TestServer, withClient } from '../helpers/server.js';

let t: TestServer;
let password: string;
let betaPassword: string;

beforeAll(async () => {
  t = await startTestServer();
  password = await t.createDatabase('alpha');
  betaPassword = await t.createDatabase('beta');
});
afterAll(() => t?.close());

const conninfo = (host: string, extra = '') =>
  `host=${host} hostaddr=127.0.0.1 port=${t.port} user=postgres sslmode=verify-full sslrootcert=${t.caPath} ${extra}`;

/** Startup over TLS with raw parameters; returns the server's first error fields. */
async function rawStartup(params: Record<string, string>, servername?: string) {
  const socket = await tlsConnect(t.port, t.ca, servername);
  socket.write(startupMessage(params));
  const { data } = await readUntilClose(socket);
  return errorFields(data);
}

describe('routing', () => {
  it('routes by SNI with node-postgres', async () => {
    await withClient(t.pgConfig('alpha', password), async (c) => {
      await c.query('create table who (name text)');
      await c.query("insert into who values ('alpha')");
    });
    const rows = await withClient(t.pgConfig('alpha', password), (c) => c.query('select name from who'));
    expect(rows.rows).toEqual([{ name: 'alpha' }]);
    // beta is a different database: the table is not there.
    const code = await sqlstateOf(
      withClient(t.pgConfig('beta', betaPassword), (c) => c.query('select * from who')),
    );
    expect(code).toBe('42P01');
  });

  it('routes by SNI with psql and verify-full', async () => {
    const r = await psql(
      conninfo('alpha.db.example.com', 'dbname=postgres'),
      ['-tAc', 'select count(*) from who'],
      {
        PGPASSWORD: password,
      },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('1');
  });

  it('routes by SNI with postgres.js', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: t.port,
      user: 'postgres',
      password,
      database: 'postgres',
      ssl: { ca: t.ca, servername: 'alpha.db.example.com' },
      max: 1,
    });
    try {
      const rows = await sql`select name from who`;
      expect(rows[0]?.name).toBe('alpha');
    } finally {
      await sql.end();
    }
  });

  it('accepts options=endpoint=<id> and dbname=<id> without SNI', async () => {
    const viaOptions = await psql(
      `host=127.0.0.1 port=${t.port} user=postgres sslmode=require options=endpoint=alpha`,
      ['-tAc', 'select count(*) from who'],
      { PGPASSWORD: password },
    );
    expect(viaOptions.stdout.trim()).toBe('1');
    const viaDbname = await psql(
      `host=127.0.0.1 port=${t.port} user=postgres sslmode=require dbname=alpha`,
      ['-tAc', 'select count(*) from who'],
      { PGPASSWORD: password },
    );
    expect(viaDbname.stdout.trim()).toBe('1');
  });

  it('refuses SNI that disagrees with endpoint or dbname', async () => {
    const a = await psql(conninfo('alpha.db.example.com', 'dbname=beta'), ['-c', 'select 1'], {
      PGPASSWORD: password,
    });
    expect(a.code).not.toBe(0);
    expect(a.stderr).toMatch(/does not match/);
    const b = await rawStartup({ user: 'postgres', options: 'endpoint=beta' }, 'alpha.db.example.com');
    expect(b?.C).toBe('08004');
    expect(b?.S).toBe('FATAL');
  });

  it('names both ways to pass an id when there is none', async () => {
    const fields = await rawStartup({ user: 'postgres' });
    expect(fields?.S).toBe('FATAL');
    expect(fields?.M).toMatch(/SNI/);
    expect(fields?.M).toMatch(/endpoint=/);
  });

  it('accepts dbname=postgres alongside SNI', async () => {
    await withClient(t.pgConfig('alpha', password, { database: 'postgres' }), async (c) => {
      expect((await c.query('select 1 as x')).rows[0].x).toBe(1);
    });
  });
});

describe('authentication', () => {
  it('gives 28P01 for a wrong password, unknown database and unknown user, opening nothing', async () => {
    const before = t.server.registry.stats.opens;
    const cases: pg.ClientConfig[] = [
      t.pgConfig('beta', 'wrong'),
      t.pgConfig('nosuchdb', 'whatever'),
      t.pgConfig('beta', betaPassword, { user: 'mallory' }),
    ];
    const messages: string[] = [];
    for (const config of cases) {
      const client = new pg.Client(config);
      const err = (await client.connect().then(
        () => undefined,
        (e: unknown) => e,
      )) as { code?: string; message: string } | undefined;
      await client.end().catch(() => undefined);
      expect(err?.code).toBe('28P01');
      messages.push(err?.message.replace(/"[^"]*"/, '"?"') ?? '');
    }
    // Same failure whatever was wrong: nothing tells which databases or users exist.
    expect(new Set(messages).size).toBe(1);
    expect(t.server.registry.stats.opens).toBe(before);
    expect(await readdir(t.dataDir)).not.toContain('nosuchdb');
  });
});

describe('hostile database ids', () => {
  const hostile = [
    '..',
    '%2e%2e',
    '.',
    'ünïcødé',
    'a'.repeat(64),
    'abc.',
    'ABC',
    '../alpha',
    'a/b',
    'x\\y',
    ' alpha',
  ];

  it.each(hostile)('refuses dbname %j and touches nothing', async (id) => {
    const outside = await readdir(path.dirname(t.dataDir));
    const fields = await rawStartup({ user: 'postgres', database: id });
    expect(fields?.S).toBe('FATAL');
    expect(['3D000', '28P01']).toContain(fields?.C);
    expect(await readdir(path.dirname(t.dataDir))).toEqual(outside);
  });

  it.each(['..', 'a_b', 'x'.repeat(64), 'abc.', '-'])('refuses SNI label %j', async (label) => {
    const fields = await rawStartup({ user: 'postgres' }, `${label}.db.example.com`);
    expect(fields?.S).toBe('FATAL');
    expect(fields?.C).toBe('3D000');
  });

  it('treats SNI names case-insensitively, as DNS does', async () => {
    await withClient(
      t.pgConfig('alpha', password, { ssl: { ca: t.ca, servername: 'ALPHA.DB.Example.com' } }),
      async (c) => {
        expect((await c.query('select count(*)::int as n from who')).rows[0].n).toBe(1);
      },
    );
  });

  it('refuses a trailing-dot SNI name', async () => {
    const fields = await rawStartup({ user: 'postgres' }, 'alpha.db.example.com.');
    expect(fields?.S).toBe('FATAL');
  });

  it('treats a NUL inside a startup value as the end of the value, never as part of a path', async () => {
    const socket = await tlsConnect(t.port, t.ca, undefined);
    const body = Buffer.from('user\0postgres\0database\0alp\0ha/..\0\0\0');
    const head = Buffer.alloc(8);
    head.writeUInt32BE(8 + body.length, 0);
    head.writeUInt32BE(196608, 4);
    socket.write(Buffer.concat([head, body]));
    const first = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
    socket.destroy();
    // The value ends at the NUL: routing sees "alp" (auth starts: 'R'), never "alp\0ha/..".
    expect(String.fromCharCode(first[0] as number)).toBe('R');
    expect(await readdir(path.dirname(t.dataDir))).not.toContain('ha');
  });

  it('refuses a malformed startup packet with 08P01', async () => {
    const socket = await tlsConnect(t.port, t.ca, undefined);
    const body = Buffer.from('user\0postgres\0database\0alpha');
    const head = Buffer.alloc(8);
    head.writeUInt32BE(8 + body.length, 0);
    head.writeUInt32BE(196608, 4);
    socket.write(Buffer.concat([head, body]));
    const { data } = await readUntilClose(socket);
    expect(errorFields(data)?.C).toBe('08P01');
  });
});
