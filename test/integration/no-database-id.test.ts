import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { psql, startTestServer, type TestServer } from '../helpers/server.js';

/**
 * A client that names no database (libpq sends dbname = user name by default) is told how to name
 * one, before authentication and whatever its password, instead of failing SCRAM for a database
 * called "postgres".
 */

let t: TestServer;
let password: string;

beforeAll(async () => {
  t = await startTestServer();
  password = await t.createDatabase('demo');
});
afterAll(() => t?.close());

const NO_ID =
  /no database id: connect to <id>\.db\.example\.com \(TLS SNI\) or pass options=endpoint=<id> or dbname=<id>/;

describe('connecting without a database id', () => {
  it.each([
    ['127.0.0.1 (no SNI)', '127.0.0.1'],
    ['localhost (SNI not under the domain)', 'localhost'],
  ])('psql to %s without dbname gets the 08004 message, with the right password', async (_, host) => {
    const r = await psql(`host=${host} port=${t.port} user=postgres sslmode=require`, ['-c', 'select 1'], {
      PGPASSWORD: password,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(NO_ID);
    expect(r.stderr).not.toMatch(/password authentication failed/);
  });

  it('refuses before authentication: no password is asked for', async () => {
    // Without PGPASSWORD, psql (stdin not a terminal) would fail "no password supplied" if asked.
    for (const dbname of ['', 'dbname=postgres', 'dbname=template1']) {
      const r = await psql(`host=127.0.0.1 port=${t.port} user=postgres sslmode=require ${dbname}`, [
        '-c',
        'select 1',
      ]);
      expect(r.stderr, dbname).toMatch(NO_ID);
    }
  });

  it('answers 08004 FATAL, the same whether or not the user or password is right', async () => {
    for (const [user, pw] of [
      ['postgres', password],
      ['postgres', 'wrong-password'],
      ['nobody', 'wrong-password'],
    ]) {
      // node-postgres defaults the database to the user name, as libpq does; no SNI for an IP.
      const client = new pg.Client({
        host: '127.0.0.1',
        port: t.port,
        user,
        password: pw,
        ssl: { ca: t.ca },
      });
      client.on('error', () => undefined);
      const err = (await client.connect().then(
        () => undefined,
        (e: unknown) => e,
      )) as { code?: string; severity?: string; message?: string; hint?: string } | undefined;
      await client.end().catch(() => undefined);
      expect(err).toMatchObject({ code: '08004', severity: 'FATAL' });
      expect(err?.message).toMatch(NO_ID);
      expect(err?.hint).toMatch(/endpoint=<id>/);
    }
  });

  it('connects once the id is named, with verify-full against 127.0.0.1 and localhost', async () => {
    // The dev certificate names localhost, 127.0.0.1 and ::1, so verify-full works without SNI routing.
    for (const host of ['127.0.0.1', 'localhost']) {
      for (const named of ['dbname=demo', 'options=endpoint=demo']) {
        const r = await psql(
          `host=${host} port=${t.port} user=postgres ${named} sslmode=verify-full sslrootcert=${t.caPath}`,
          ['-tAc', 'select 42'],
          { PGPASSWORD: password },
        );
        expect(r.stderr, `${host} ${named}`).toBe('');
        expect(r.stdout.trim()).toBe('42');
      }
    }
  });

  it('refuses to create a database a dbname could not reach', async () => {
    for (const id of ['postgres', 'template0', 'template1']) {
      await expect(t.server.manager.create(id, { password: 'long-enough-password' })).rejects.toThrow(
        `database id "${id}" is reserved`,
      );
    }
  });
});
