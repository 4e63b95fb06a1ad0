import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendCancel } from '../helpers/clients.js';
import { cstr, int16, int32, tagged } from '../helpers/messages.js';
import { BackendReader, parseErrorFields, rawLogin } from '../helpers/raw-auth.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * Extended-protocol units at their edges, byte by byte: a unit left without its Sync by a client
 * that goes (Postgres rolls it back), a Query sent before a unit's Sync, a DEALLOCATE ALL unit
 * that TCP splits, and user text that looks like the engine's own corruption warnings.
 */

const parse = (sql: string, name = '') => tagged('P', cstr(name), cstr(sql), int16(0));
const bind = (statement = '') => tagged('B', cstr(''), cstr(statement), int16(0), int16(0), int16(0));
const describePortal = tagged('D', 'P', cstr(''));
const execute = tagged('E', cstr(''), int32(0));
const sync = tagged('S');
const flush = tagged('H');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Message types (errors with their SQLSTATE) until one of type `last`. */
async function replies(reader: BackendReader, last: string): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const m = await reader.message(10_000);
    out.push(
      m.type === 'E' ? `E:${parseErrorFields(m.body).C}` : m.type === 'Z' ? `Z${m.body.toString()}` : m.type,
    );
    if (m.type === last) return out;
  }
}

describe('extended units at their edges', () => {
  let gw: TestServer;
  let pw = '';

  beforeAll(async () => {
    gw = await startTestServer();
    pw = await gw.createDatabase('edges');
    await withClient(gw.pgConfig('edges', pw), (c) =>
      c.query(`create table t (v text);
        create function echo() returns trigger language plpgsql as $$
          begin raise warning 'invalid value: %', new.v; return new; end $$;
        create table w (v text);
        create trigger echo before insert on w for each row execute function echo();
        create table d (id int primary key deferrable initially deferred)`),
    );
  });
  afterAll(() => gw?.close());

  const login = async () => {
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'edges', password: pw });
    return { session, socket: session.socket, reader: new BackendReader(session.socket) };
  };
  const count = (table: string) =>
    withClient(
      gw.pgConfig('edges', pw),
      async (c) => (await c.query(`select count(*)::int as n from ${table}`)).rows[0].n,
    );

  it('rolls back a unit whose client left before its Sync, as Postgres does', async () => {
    const { socket, reader } = await login();
    socket.write(Buffer.concat([parse("insert into t values ('left')"), bind(), execute, flush]));
    expect(await replies(reader, 'C')).toEqual(['1', '2', 'C']);
    socket.destroy();
    // The next client's turn comes after the leaving client's session was given back.
    for (let i = 0; i < 20 && (await count('t')) !== 0; i++) await sleep(100);
    expect(await count('t')).toBe(0);
  });

  it("fails a Query sent before its unit's Sync when the unit cannot commit, as Postgres does", async () => {
    const { socket, reader } = await login();
    const duplicate = Buffer.concat([parse('insert into d values (1), (1)'), bind(), execute]);
    socket.write(Buffer.concat([duplicate, tagged('Q', cstr("insert into t values ('after')"))]));
    // Postgres reports the deferred unique violation at the commit that ends the Query.
    expect(await replies(reader, 'Z')).toEqual(['1', '2', 'C', 'E:23505', 'ZI']);
    socket.write(sync);
    expect(await replies(reader, 'Z')).toEqual(['ZI']);
    socket.destroy();
    expect(await count('d')).toBe(0);
    expect(await count("t where v = 'after'")).toBe(0);
  });

  it('drops a Query sent after an error in a unit not yet synced, as Postgres does', async () => {
    const { socket, reader } = await login();
    const insert = (v: string) => Buffer.concat([parse(`insert into t values ('${v}')`), bind(), execute]);
    const failing = Buffer.concat([parse('select 1/0'), bind(), execute]);
    socket.write(Buffer.concat([insert('skipped'), failing, flush]));
    expect(await replies(reader, 'E')).toEqual(['1', '2', 'C', '1', 'E:22012']);
    socket.write(tagged('Q', cstr("insert into t values ('skipped')")));
    socket.write(Buffer.concat([insert('skipped'), sync]));
    // Only the Sync is answered: the Query and the messages before the Sync were dropped.
    expect(await replies(reader, 'Z')).toEqual(['ZI']);
    socket.destroy();
    expect(await count("t where v = 'skipped'")).toBe(0);
  });

  it("passes on a notification that a Query's early end of the unit commits", async () => {
    const { socket, reader } = await login();
    socket.write(tagged('Q', cstr('listen edges')));
    expect(await replies(reader, 'Z')).toEqual(['C', 'ZI']);
    const notify = Buffer.concat([parse("select pg_notify('edges', 'x')"), bind(), execute]);
    socket.write(Buffer.concat([notify, tagged('Q', cstr('select 1'))]));
    expect(await replies(reader, 'Z')).toEqual(['1', '2', 'D', 'C', 'A', 'T', 'D', 'C', 'ZI']);
    socket.destroy();
  });

  it('fails a COPY FROM STDIN cancelled while its data arrives, writing none of it', async () => {
    const { session, socket, reader } = await login();
    socket.write(tagged('Q', cstr('copy t from stdin')));
    expect(await replies(reader, 'G')).toEqual(['G']);
    socket.write(tagged('d', 'copied\n'));
    await sleep(100);
    await sendCancel(gw, 'edges', session.processId, session.secretKey);
    expect(await replies(reader, 'Z')).toEqual(['E:57014', 'ZI']);
    // What the client sent before it heard is dropped, as Postgres drops it.
    socket.write(Buffer.concat([tagged('d', 'copied\n'), tagged('c'), tagged('Q', cstr('select 1'))]));
    expect(await replies(reader, 'Z')).toEqual(['T', 'D', 'C', 'ZI']);
    socket.destroy();
    expect(await count("t where v = 'copied'")).toBe(0);
  });

  it('answers a DEALLOCATE ALL unit that arrives in pieces', async () => {
    const { socket, reader } = await login();
    socket.write(Buffer.concat([parse('DEALLOCATE ALL'), bind()]));
    await sleep(200);
    socket.write(Buffer.concat([describePortal, execute]));
    await sleep(200);
    socket.write(sync);
    expect(await replies(reader, 'Z')).toEqual(['1', '2', 'n', 'C', 'ZI']);
    socket.destroy();
  });

  it('does not take user text that looks like a corruption warning for one', async () => {
    const outcome = await withClient(gw.pgConfig('edges', pw), async (c) => {
      await c.query(`DO $$ BEGIN RAISE WARNING 'snapshot 0x1 still active'; END $$`);
      await c.query("insert into w values ('a reference leak')");
      return c
        .query(`DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'XX000', MESSAGE = 'bad buffer ID: 0'; END $$`)
        .catch((err: { code?: string }) => err.code);
    });
    expect(outcome).toBe('XX000');
    expect(await count('w')).toBe(1);
    expect(gw.server.registry.stats.restarts).toBe(0);
  });
});
