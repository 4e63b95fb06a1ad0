import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../helpers/messages.js';
import { BackendReader, rawLogin, rawQuery, readToReady } from '../helpers/raw-auth.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * An interrupt (statement timeout, cancel) restarts the database's engine. One that lands while a
 * transaction commits must not report a committed transaction as failed: the client would retry
 * it (a double transfer). The client's statement_timeout is swept across the moment of COMMIT;
 * every transaction answered 57014 must be absent, every acknowledged one present. Found by a
 * consistency probe: before the WAL gate, about one timeout in five had committed.
 */
const codeOf = (err: { code?: string }) => err.code ?? '?';

/** Retries a statement the client's statement_timeout may cut (57014), a bounded number of times. */
async function untilOk(attempt: () => Promise<string>): Promise<void> {
  let outcome = '';
  for (let i = 0; i < 20 && outcome !== 'ok'; i++) {
    outcome = await attempt();
    if (outcome !== 'ok' && outcome !== '57014') throw new Error(`unexpected ${outcome}`);
  }
  expect(outcome).toBe('ok');
}

describe('an interrupt at commit', () => {
  let gw: TestServer;
  let pw = '';

  beforeAll(async () => {
    gw = await startTestServer();
    pw = await gw.createDatabase('commits');
  });
  afterAll(() => gw?.close());

  it('never answers 57014 for a transaction that committed', async () => {
    const client = new pg.Client(gw.pgConfig('commits', pw));
    client.on('error', () => undefined);
    await client.connect();
    try {
      await client.query('create table ledger (id uuid primary key)');
      const acknowledged: string[] = [];
      const refused: string[] = [];
      const started = Date.now();
      for (let i = 0; i < 150 && Date.now() - started < 15_000; i++) {
        const id = randomUUID();
        // pg_sleep(0.02) then COMMIT; the deadline moves across the commit, 20-31 ms.
        await client.query(`set statement_timeout = '${20 + (i % 12)}ms'`);
        const outcome = await client
          .query(`begin; insert into ledger values ('${id}'); select pg_sleep(0.02); commit`)
          .then(() => 'ok', codeOf);
        if (outcome === 'ok') acknowledged.push(id);
        else if (outcome === '57014') refused.push(id);
        else throw new Error(`unexpected ${outcome}`);
        // A timed-out transaction leaves a failed block behind; ROLLBACK is never cut short.
        await client.query('rollback');
        await untilOk(() => client.query('set statement_timeout = 0').then(() => 'ok', codeOf));
      }
      const { rows } = await client.query<{ id: string }>('select id::text from ledger');
      const present = new Set(rows.map((r) => r.id));
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.filter((id) => present.has(id))).toEqual([]);
      expect(acknowledged.filter((id) => !present.has(id))).toEqual([]);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('does the same for a named prepared COMMIT, whose text the gateway never sees (pgjdbc)', async () => {
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'commits', password: pw });
    const reader = new BackendReader(session.socket);
    /** Sends and reads until ReadyForQuery: whether it went through, or the error's SQLSTATE. */
    const run = async (bytes: Buffer) => {
      session.socket.write(bytes);
      return (await readToReady(reader)).outcome;
    };
    const q = (sql: string) => tagged('Q', cstr(sql));
    const parse = (name: string, sql: string) => tagged('P', cstr(name), cstr(sql), int16(0));
    const bindExecute = (name: string) =>
      Buffer.concat([
        tagged('B', cstr(''), cstr(name), int16(0), int16(0), int16(0)),
        tagged('E', cstr(''), int32(0)),
      ]);
    try {
      expect(await run(q('create table named (id uuid primary key)'))).toBe('ok');
      expect(await run(Buffer.concat([parse('c', 'COMMIT'), tagged('S')]))).toBe('ok');
      const acknowledged: string[] = [];
      const refused: string[] = [];
      const started = Date.now();
      for (let i = 0; i < 120 && Date.now() - started < 12_000; i++) {
        const id = randomUUID();
        expect(await run(q(`begin; insert into named values ('${id}')`))).toBe('ok');
        expect(await run(q(`set statement_timeout = '${20 + (i % 12)}ms'`))).toBe('ok');
        // One pipeline: a sleep, then the named COMMIT; the deadline moves across the commit.
        const sleepThenCommit = Buffer.concat([
          parse('', 'select pg_sleep(0.02)'),
          bindExecute(''),
          bindExecute('c'),
          tagged('S'),
        ]);
        const outcome = await run(sleepThenCommit);
        if (outcome === 'ok') acknowledged.push(id);
        else if (outcome === '57014') refused.push(id);
        else throw new Error(`unexpected ${outcome}`);
        expect(await run(q('rollback'))).toBe('ok');
        // SET itself runs under the timeout it replaces (as in Postgres), so it may be cut.
        await untilOk(() => run(q('set statement_timeout = 0')));
      }
      const present = new Set(await rawQuery(session, 'select id::text from named'));
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.filter((id) => present.has(id))).toEqual([]);
      expect(acknowledged.filter((id) => !present.has(id))).toEqual([]);
    } finally {
      session.socket.destroy();
    }
  });

  it('never cuts a ROLLBACK short: the client leaves its failed transaction whatever its timeout', async () => {
    const client = new pg.Client(gw.pgConfig('commits', pw));
    client.on('error', () => undefined);
    await client.connect();
    try {
      await client.query(`set statement_timeout = '1ms'`);
      const variants = [{ text: 'rollback' }, { text: 'abort' }, { name: 'rb', text: 'rollback' }];
      for (let i = 0; i < 60; i++) {
        // Fails either way: 22012, or 57014 when the 1 ms deadline comes first.
        const failed = await client.query('begin; select 1/0').then(() => 'ok', codeOf);
        expect({ i, failed }).toEqual({ i, failed: expect.stringMatching(/^(22012|57014)$/) });
        // Simple queries, and pgjdbc's prepared ROLLBACK (extended protocol).
        const variant = variants[i % 3] ?? 'rollback';
        const outcome = await client.query(variant).then(() => 'ok', codeOf);
        expect({ i, variant, outcome }).toEqual({ i, variant, outcome: 'ok' });
      }
      await untilOk(() => client.query('set statement_timeout = 0').then(() => 'ok', codeOf));
      const { rows } = await client.query<{ s: string }>('select 1 as s');
      expect(rows).toEqual([{ s: 1 }]);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it('still times a unit in a failed transaction that runs more than one statement', async () => {
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'commits', password: pw });
    const reader = new BackendReader(session.socket);
    const run = async (...messages: Buffer[]) => {
      session.socket.write(Buffer.concat(messages));
      return (await readToReady(reader, 20_000)).outcome;
    };
    const q = (sql: string) => tagged('Q', cstr(sql));
    const statement = (sql: string) => [
      tagged('P', cstr(''), cstr(sql), int16(0)),
      tagged('B', cstr(''), cstr(''), int16(0), int16(0), int16(0)),
      tagged('E', cstr(''), int32(0)),
    ];
    try {
      expect(await run(q(`set statement_timeout = '200ms'`))).toBe('ok');
      for (const first of ['rollback', 'rollback to savepoint s', 'commit']) {
        expect(await run(q('begin; savepoint s; select 1/0'))).toBe('22012');
        // The first statement ends the failed state; the second would run for a minute.
        expect(await run(...statement(first), ...statement('select pg_sleep(60)'), tagged('S'))).toBe(
          '57014',
        );
        await run(q('rollback'));
      }
    } finally {
      session.socket.destroy();
    }
  });
});
