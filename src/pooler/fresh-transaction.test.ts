import { describe, expect, it } from 'vitest';
import { FreshTransaction } from './fresh-transaction.js';

describe('FreshTransaction', () => {
  const run = (
    fresh: FreshTransaction,
    sql: string | undefined,
    before: 'I' | 'T',
    after: 'I' | 'T' | 'E',
  ) => {
    fresh.unitStarts(before);
    if (sql !== undefined) fresh.queryRan(sql, after);
  };

  it('is fresh after START TRANSACTION and snapshot-free statements, until a query', async () => {
    const fresh = new FreshTransaction();
    run(fresh, 'START TRANSACTION', 'I', 'T');
    expect(fresh.fresh).toBe(true);
    run(fresh, 'show transaction_isolation; SET LOCAL lock_timeout = 0', 'T', 'T');
    const ran: string[] = [];
    const failed = await fresh.startOver(async (sql) => {
      ran.push(sql);
      return new Uint8Array();
    });
    expect(failed).toBe(false);
    expect(ran).toEqual([
      'ROLLBACK',
      'START TRANSACTION',
      'show transaction_isolation; SET LOCAL lock_timeout = 0',
    ]);
    run(fresh, 'select 1', 'T', 'T');
    expect(fresh.fresh).toBe(false);
    run(fresh, 'set x.y = 1', 'T', 'T'); // the snapshot stays taken
    expect(fresh.fresh).toBe(false);
  });

  it.each([
    ['begin; select 1', 'T'],
    ['begin', 'E'],
    ['begin', 'I'],
    ['set transaction snapshot $$00000003-1$$', 'T'],
    ['/* begin */ insert into t values (1)', 'T'],
    ["set application_name = '\\'; insert into t values (1); set application_name = 'x'", 'T'],
  ] as const)('%j leaving %s is not fresh', (sql, after) => {
    const fresh = new FreshTransaction();
    run(fresh, sql, 'I', after);
    expect(fresh.fresh).toBe(false);
  });

  it('ends with any unit that is not a simple Query (extended, COPY, refused)', () => {
    const fresh = new FreshTransaction();
    run(fresh, 'begin', 'I', 'T');
    run(fresh, undefined, 'T', 'T');
    expect(fresh.fresh).toBe(false);
    run(fresh, 'savepoint a', 'T', 'T'); // began before: the snapshot may be taken
    expect(fresh.fresh).toBe(false);
  });
  it('keeps RESET and ROLLBACK TO SAVEPOINT among what takes no snapshot', () => {
    const fresh = new FreshTransaction();
    run(fresh, 'begin', 'I', 'T');
    run(fresh, 'reset statement_timeout; savepoint s; rollback to savepoint s; release s', 'T', 'T');
    expect(fresh.fresh).toBe(true);
  });

  it('takes an extended unit by the texts it ran and parsed', () => {
    const fresh = new FreshTransaction();
    fresh.unitStarts('I');
    expect(fresh.watching).toBe(true);
    fresh.ran(['BEGIN'], 'T', ['BEGIN']);
    expect(fresh.fresh).toBe(true);
    fresh.unitStarts('T');
    expect(fresh.staysFresh(['SET LOCAL a.b = 1'], 'T', ['SET LOCAL a.b = 1', 'select 1'])).toBe(false);
    fresh.ran(['SET LOCAL a.b = 1'], 'T', ['SET LOCAL a.b = 1']);
    expect(fresh.fresh).toBe(true);
    fresh.unitStarts('T');
    fresh.ran(undefined, 'T');
    expect(fresh.fresh).toBe(false);
    fresh.unitStarts('T');
    expect(fresh.watching).toBe(false);
  });
  it('starts over with what the gateway ran after a unit too (startup settings put back)', async () => {
    const fresh = new FreshTransaction();
    run(fresh, 'begin', 'I', 'T');
    fresh.unitStarts('T');
    fresh.alsoRan("SAVEPOINT r; SET statement_timeout TO '5s'; RELEASE r");
    fresh.ran(['reset statement_timeout'], 'T');
    const ran: string[] = [];
    await fresh.startOver(async (sql) => {
      ran.push(sql);
      return new Uint8Array();
    });
    expect(ran).toEqual([
      'ROLLBACK',
      'begin',
      'reset statement_timeout',
      "SAVEPOINT r; SET statement_timeout TO '5s'; RELEASE r",
    ]);
  });
});
