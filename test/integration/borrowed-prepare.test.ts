import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../helpers/messages.js';
import {
  BackendReader,
  type RawSession,
  rawLogin,
  rawQuery,
  readToReady,
  writeSplit,
} from '../helpers/raw-auth.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * A prepare-only unit (PQprepare: psycopg, pgbench -M prepared) runs while another client's
 * transaction is parked, so that drivers blocking a thread on it cannot deadlock. Postgres takes a
 * transaction's snapshot at its first query, and a Parse is one: borrowed right after
 * `START TRANSACTION`, it made the holder's `SET TRANSACTION ISOLATION LEVEL` fail (25001).
 * TypeORM and Sequelize send those two as separate statements; an ORM probe saw 1,104 of 1,315
 * TypeORM SERIALIZABLE transactions fail while a libpq client prepared.
 */
describe('a prepare borrowed during another client’s transaction', () => {
  let gw: TestServer;
  let pw = '';
  let borrower: RawSession;
  let reader: BackendReader;
  let prepared = 0;

  /** A prepare-only unit from the borrower: its answer, read to ReadyForQuery. */
  const prepare = async (sql: string): Promise<string> => {
    const name = `b${prepared++}`;
    borrower.socket.write(
      Buffer.concat([
        tagged('P', cstr(name), cstr(sql), int16(0)),
        tagged('D', 'S', cstr(name)),
        tagged('S'),
      ]),
    );
    const { outcome, status } = await readToReady(reader);
    return `${outcome} ${status}`;
  };

  beforeAll(async () => {
    gw = await startTestServer();
    pw = await gw.createDatabase('borrow');
    borrower = await rawLogin({ port: gw.port, ca: gw.ca, id: 'borrow', password: pw });
    reader = new BackendReader(borrower.socket);
    const setup = new pg.Client(gw.pgConfig('borrow', pw));
    await setup.connect();
    await setup.query('create table t (id int primary key)');
    await setup.end();
  });
  afterAll(async () => {
    borrower?.socket.destroy();
    await gw?.close();
  });

  it('leaves SET TRANSACTION ISOLATION LEVEL possible after START TRANSACTION (TypeORM, Sequelize)', async () => {
    // Both clients log in alike: a borrower must have the holder's settings.
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'borrow', password: pw });
    const holder = { query: (sql: string) => rawQuery(session, sql) };
    try {
      for (let i = 0; i < 5; i++) {
        await holder.query('START TRANSACTION');
        // Statements that take no snapshot may come first: they are run again if the borrow undid them.
        if (i % 2) await holder.query('SHOW transaction_isolation');
        // Answered while the holder's transaction is open: it borrowed the session.
        expect(await prepare('select id from t where id = 1')).toBe('ok I');
        await holder.query('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE');
        const settings = await holder.query(`select current_setting('transaction_isolation')`);
        expect(settings).toEqual(['serializable']);
        await holder.query(`insert into t values (${i})`);
        await holder.query('COMMIT');
      }
      expect(await holder.query('select count(*) from t where id < 5')).toEqual(['5']);
    } finally {
      session.socket.destroy();
    }
  });

  it('never undoes what the holder’s transaction did before the borrow', async () => {
    // Both clients log in alike: a borrower must have the holder's settings.
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'borrow', password: pw });
    const holder = { query: (sql: string) => rawQuery(session, sql) };
    try {
      await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await holder.query('insert into public.t values (100)');
      expect(await prepare('select 1')).toBe('ok I');
      await holder.query('insert into public.t values (101)');
      await holder.query('COMMIT');
      await holder.query('BEGIN');
      await holder.query('select 1'); // the snapshot is taken: the borrow changes nothing
      expect(await prepare('select 2')).toBe('ok I');
      // As Postgres: a query ran already.
      await expect(holder.query('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')).rejects.toThrow(/25001/);
      await holder.query('ROLLBACK');
      expect(await holder.query('select id from public.t where id >= 100 order by id')).toEqual([
        '100',
        '101',
      ]);
    } finally {
      session.socket.destroy();
    }
  });

  it('counts an extended unit that arrives in pieces as one (psycopg BEGIN and SET LOCAL split by TCP)', async () => {
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'borrow', password: pw });
    const reader = new BackendReader(session.socket);
    /** One unnamed statement without parameters, written in pieces: the first ends after the Bind. */
    const split = async (sql: string) => {
      const parseBind = Buffer.concat([
        tagged('P', cstr(''), cstr(sql), int16(0)),
        tagged('B', cstr(''), cstr(''), int16(0), int16(0), int16(0)),
      ]);
      const unit = Buffer.concat([parseBind, tagged('E', cstr(''), int32(0)), tagged('S')]);
      await writeSplit(session.socket, unit, [parseBind.length, parseBind.length + 3], 30);
      return (await readToReady(reader)).outcome;
    };
    try {
      expect(await split('BEGIN')).toBe('ok');
      expect(await split("SET LOCAL statement_timeout = '5s'")).toBe('ok');
      expect(await rawQuery(session, 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')).toEqual([]);
      expect(await rawQuery(session, 'SHOW transaction_isolation')).toEqual(['serializable']);
      await rawQuery(session, 'COMMIT');
    } finally {
      session.socket.destroy();
    }
  });

  it('keeps a failed borrowed prepare out of the holder’s transaction', async () => {
    // Both clients log in alike: a borrower must have the holder's settings.
    const session = await rawLogin({ port: gw.port, ca: gw.ca, id: 'borrow', password: pw });
    const holder = { query: (sql: string) => rawQuery(session, sql) };
    try {
      await holder.query('START TRANSACTION');
      expect(await prepare('select * from missing_table')).toBe('42P01 I');
      await holder.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      expect(await holder.query(`select current_setting('transaction_isolation')`)).toEqual([
        'repeatable read',
      ]);
      await holder.query('COMMIT');
    } finally {
      session.socket.destroy();
    }
  });
});

describe('a borrowed prepare of a statement the session closed', () => {
  it('answers with the error when it cannot be prepared again, and tries again at the next use', async () => {
    const gw = await startTestServer({ MAX_PREPARED_STATEMENTS: '2' });
    try {
      const pw = await gw.createDatabase('borrow-cap');
      const login = () => rawLogin({ port: gw.port, ca: gw.ca, id: 'borrow-cap', password: pw });
      const borrower = await login();
      const holder = await login();
      const reader = new BackendReader(borrower.socket);
      const unit = async (...messages: Buffer[]) => {
        borrower.socket.write(Buffer.concat([...messages, tagged('S')]));
        const { outcome, status } = await readToReady(reader);
        return `${outcome} ${status}`;
      };
      const parse = (name: string, sql: string) => tagged('P', cstr(name), cstr(sql), int16(0));
      const describe = (name: string) => tagged('D', 'S', cstr(name));
      await rawQuery(holder, 'create table gone (a int)');
      expect(await unit(parse('old', 'select a from gone'), describe('old'))).toBe('ok I');
      // Two more: with a cap of 2 the session closes the first.
      expect(await unit(parse('x1', 'select 1'), parse('x2', 'select 2'))).toBe('ok I');
      await rawQuery(holder, 'drop table gone');
      await rawQuery(holder, 'START TRANSACTION');
      // Prepared again while the holder's transaction is parked: it fails as its Describe would.
      expect(await unit(describe('old'))).toBe('42P01 I');
      expect(await unit(describe('old'))).toBe('42P01 I');
      await rawQuery(holder, 'COMMIT');
      await rawQuery(holder, 'create table gone (a int)');
      expect(await unit(describe('old'))).toBe('ok I');
      borrower.socket.destroy();
      holder.socket.destroy();
    } finally {
      await gw.close();
    }
  });
});
