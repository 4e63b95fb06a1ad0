import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../helpers/messages.js';
import {
  BackendReader,
  parseErrorFields,
  type RawSession,
  rawLogin,
  readToReady,
} from '../helpers/raw-auth.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The gateway closes a client's statements past MAX_PREPARED_STATEMENTS and prepares them again
 * at their next use. Postgres keeps a prepared statement's types for its life: after
 * `ALTER COLUMN TYPE` its parameters keep their types, and a changed result fails (0A000) rather
 * than reach a client that decodes by the old types. A statement prepared again must do the same:
 * asyncpg and pgjdbc encode and decode binary values by the types they were told.
 */
describe('statements prepared again keep the types the client learned', () => {
  let gw: TestServer;
  let pw = '';
  let session: RawSession;
  let reader: BackendReader;

  /** Sends a unit and reads to ReadyForQuery: the SQLSTATE of its first error, or 'ok'. */
  const run = async (...messages: Buffer[]): Promise<string> => {
    session.socket.write(Buffer.concat([...messages, tagged('S')]));
    return (await readToReady(reader)).outcome;
  };
  const parse = (name: string, sql: string) => tagged('P', cstr(name), cstr(sql), int16(0));
  const describeS = (name: string) => tagged('D', 'S', cstr(name));
  const close = (name: string) => tagged('C', 'S', cstr(name));
  /** Bind with one binary int4 parameter (or none), results in text; then Execute. */
  const bindExecute = (name: string, int4?: number) =>
    Buffer.concat([
      int4 === undefined
        ? tagged('B', cstr(''), cstr(name), int16(0), int16(0), int16(0))
        : tagged('B', cstr(''), cstr(name), int16(1), int16(1), int16(1), int32(4), int32(int4), int16(0)),
      tagged('E', cstr(''), int32(0)),
    ]);
  /** Prepares two throwaway statements: with a cap of 2, the older ones are closed in the session. */
  let filler = 0;
  const pushOut = async () => {
    for (let k = 0; k < 2; k++) expect(await run(parse(`filler${filler++}`, 'select 1'))).toBe('ok');
  };
  /** A simple Query on the same reader: the first column of each row, or throws with its SQLSTATE. */
  const sql = async (text: string): Promise<string[]> => {
    session.socket.write(tagged('Q', cstr(text)));
    const rows: string[] = [];
    let error = '';
    for (;;) {
      const m = await reader.message(10_000);
      if (m.type === 'D') rows.push(m.body.toString('utf8', 6, 6 + m.body.readInt32BE(2)));
      if (m.type === 'E' && !error) error = parseErrorFields(m.body).C ?? '?';
      if (m.type === 'Z') {
        if (error) throw new Error(`query failed: ${error}`);
        return rows;
      }
    }
  };

  beforeAll(async () => {
    gw = await startTestServer({ MAX_PREPARED_STATEMENTS: '2' });
    pw = await gw.createDatabase('types');
    session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'types', password: pw });
    reader = new BackendReader(session.socket);
  });
  afterAll(async () => {
    session?.socket.destroy();
    await gw?.close();
  });

  it('keeps parameter types: a binary int4 still binds after the column became bigint', async () => {
    await sql('create table p (a int4)');
    expect(await run(parse('ins', 'insert into p values ($1)'), describeS('ins'))).toBe('ok');
    expect(await run(bindExecute('ins', 7))).toBe('ok');
    await pushOut();
    await sql('alter table p alter a type int8');
    // Prepared again as `$1` of the new type, 4 bytes would not be an int8 (22P03).
    expect(await run(bindExecute('ins', 9))).toBe('ok');
    expect(await sql('select a from p order by a')).toEqual(['7', '9']);
  });

  it('fails a changed result type as Postgres does, until the client prepares it anew', async () => {
    await sql('create table r (a int4); insert into r values (1)');
    expect(await run(parse('sel', 'select a from r'), describeS('sel'))).toBe('ok');
    expect(await run(bindExecute('sel'))).toBe('ok');
    await pushOut();
    await sql('alter table r alter a type text');
    expect(await run(bindExecute('sel'))).toBe('0A000');
    expect(await run(bindExecute('sel'))).toBe('0A000'); // every use, as in Postgres
    // In a transaction, the failure aborts it, as Postgres' does.
    expect(await run(parse('', 'begin'), bindExecute(''))).toBe('ok');
    expect(await run(bindExecute('sel'))).toBe('0A000');
    await expect(sql('select 1')).rejects.toThrow(/25P02/);
    await sql('rollback');
    // Closed and prepared again by the client: the new type.
    expect(
      await run(close('sel'), parse('sel', 'select a from r'), describeS('sel'), bindExecute('sel')),
    ).toBe('ok');
  });

  it('lets a result that did not change through, and a statement never described', async () => {
    await sql('create table k (a int4, b text)');
    expect(await run(parse('same', 'select a from k'), describeS('same'))).toBe('ok');
    expect(await run(parse('blind', 'select b from k'))).toBe('ok');
    await pushOut();
    await sql('alter table k alter b type varchar(10)');
    expect(await run(bindExecute('same'))).toBe('ok');
    expect(await run(bindExecute('blind'))).toBe('ok'); // never described: nothing to keep
  });

  it('a statement that cannot be prepared again fails at its use: what comes before it in the unit runs', async () => {
    await sql('create table gone (a int4)');
    expect(await run(parse('old', 'select a from gone'))).toBe('ok');
    await pushOut();
    await sql('drop table gone');
    expect(await run(parse('live', 'select 5'))).toBe('ok');
    // As in Postgres: the Close runs, then the Bind of the statement fails (42P01).
    expect(await run(close('live'), bindExecute('old'))).toBe('42P01');
    expect(await run(bindExecute('live'))).toBe('26000');
    // Closed in the session too, not left there under its backend name.
    expect(await sql("select count(*) from pg_prepared_statements where statement = 'select 5'")).toEqual([
      '0',
    ]);
    // Every use fails the same way (not with 26000), until the table is back.
    expect(await run(bindExecute('old'))).toBe('42P01');
    await sql('create table gone (a int4)');
    expect(await run(bindExecute('old'))).toBe('ok');
  });

  it('a changed result type fails at the use too, after the messages before it', async () => {
    await sql('create table moved (a int4)');
    expect(await run(parse('typed', 'select a from moved'), describeS('typed'))).toBe('ok');
    await pushOut();
    await sql('alter table moved alter a type text');
    expect(await run(parse('other', 'select 6'))).toBe('ok');
    expect(await run(close('other'), bindExecute('typed'))).toBe('0A000');
    expect(await run(bindExecute('other'))).toBe('26000');
    expect(await sql("select count(*) from pg_prepared_statements where statement = 'select 6'")).toEqual([
      '0',
    ]);
  });

  it('a Close the engine skipped after an error in its unit leaves the statement, as in Postgres', async () => {
    expect(await run(parse('kept', 'select 2'))).toBe('ok');
    expect(await run(parse('boom', 'select 1/0'))).toBe('ok');
    // The Execute fails: the Close after it never runs.
    expect(await run(bindExecute('boom'), close('kept'))).toBe('22012');
    expect(await run(bindExecute('kept'))).toBe('ok');
    // One that runs does close it.
    expect(await run(close('kept'))).toBe('ok');
    expect(await run(bindExecute('kept'))).toBe('26000');
    // Closed and defined again in one unit; a portal's Close counts in the order too.
    expect(await run(parse('kept', 'select 3'))).toBe('ok');
    expect(
      await run(tagged('C', 'P', cstr('')), close('kept'), parse('kept', 'select 4'), bindExecute('kept')),
    ).toBe('ok');
    expect(await run(bindExecute('boom'), close('kept'), close('boom'))).toBe('22012');
    expect(await run(bindExecute('kept'))).toBe('ok');
    expect(await run(close('kept'), close('boom'))).toBe('ok');
    expect(await run(bindExecute('boom'))).toBe('26000');
    // A Close whose CloseComplete went out in an earlier part of a large, streamed reply.
    expect(await run(parse('kept', 'select 5'))).toBe('ok');
    expect(
      await run(
        close('kept'),
        parse('', "select repeat('x', 100000) from generate_series(1, 8)"),
        bindExecute(''),
      ),
    ).toBe('ok');
    await expect(sql('deallocate kept')).rejects.toThrow(/26000/);
  });

  it('asyncpg: an insert keeps its parameter type, a select whose result changed is prepared again', async () => {
    const script = path.join(import.meta.dirname, '../python/asyncpg_alter_type.py');
    const dsn = `postgres://postgres:${pw}@127.0.0.1:${gw.port}/types`;
    const { stdout } = await promisify(execFile)('/usr/bin/python3', [script, dsn, gw.caPath], {
      timeout: 60_000,
    }).catch((err: { stdout?: string; stderr?: string }) => {
      throw new Error(`asyncpg_alter_type.py failed: ${err.stdout ?? ''} ${err.stderr ?? ''}`);
    });
    expect(JSON.parse(stdout)).toEqual({
      rows: [
        [7, '2.5'],
        [9, '4.5'],
      ],
      errors: [],
    });
  });
});
