import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { uninterruptibleQuery, uninterruptibleUnit } from './uninterruptible.js';

describe('uninterruptibleQuery', () => {
  it.each([
    ['rollback', false, true],
    ['  ROLLBACK;', false, true],
    ['abort work', false, true],
    ['rollback to savepoint a', false, true],
    ['/* c */ rollback', false, true],
    ['select 1 -- rollback', false, false],
    ['rollback; select pg_sleep(10)', false, false],
    ['rollback; select pg_sleep(10)', true, false],
    ['select pg_sleep(10)', false, false],
    ['commit', false, false],
    ['commit', true, true],
    ['select pg_sleep(10)', true, true], // refused at once in a failed transaction
    ["rollback; select ';'", false, false],
    ['rollbacks', false, false],
    ['', true, false],
  ])('%j (failed transaction: %s) → %s', (sql, failed, expected) => {
    expect(uninterruptibleQuery(sql, failed)).toBe(expected);
  });
});

describe('uninterruptibleUnit', () => {
  const parse = (sql: string) => tagged('P', cstr(''), cstr(sql), int16(0));
  const bindExecute = [
    tagged('B', cstr(''), cstr(''), int16(0), int16(0), int16(0)),
    tagged('E', cstr(''), int32(0)),
  ];
  const sync = tagged('S');

  it('exempts one Execute in a failed transaction, and nothing else', () => {
    const one = [parse('rollback'), ...bindExecute, sync];
    expect(uninterruptibleUnit(one, true)).toBe(true);
    expect(uninterruptibleUnit(one, false)).toBe(false);
    const two = [
      parse('rollback to savepoint a'),
      ...bindExecute,
      parse('select pg_sleep(9)'),
      ...bindExecute,
      sync,
    ];
    expect(uninterruptibleUnit(two, true)).toBe(false);
  });
});
