import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { addBatch, emptyUnit, uninterruptibleQuery, uninterruptibleUnit } from './uninterruptible.js';

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
  const parse = (sql: string, name = '') => tagged('P', cstr(name), cstr(sql), int16(0));
  const bind = (statement = '') => tagged('B', cstr(''), cstr(statement), int16(0), int16(0), int16(0));
  const execute = tagged('E', cstr(''), int32(0));
  const sync = tagged('S');
  const rollbacks = new Set(['_g1_0']); // _g1_1: select pg_sleep(9)
  const unitOf = (...batches: Buffer[][]) => {
    const unit = emptyUnit();
    for (const batch of batches) addBatch(unit, batch, (name) => rollbacks.has(name));
    return unit;
  };
  const bindPortal = (portal: string, statement: string) =>
    tagged('B', cstr(portal), cstr(statement), int16(0), int16(0), int16(0));
  const executePortal = (portal: string) => tagged('E', cstr(portal), int32(0));

  it('exempts one Execute in a failed transaction', () => {
    const one = unitOf([parse('select pg_sleep(9)'), bind(), execute, sync]);
    expect(uninterruptibleUnit(one, true)).toBe(true);
    expect(uninterruptibleUnit(one, false)).toBe(false);
    const two = unitOf(
      [parse('rollback to savepoint a'), bind(), execute],
      [parse('select pg_sleep(9)'), bind(), execute, sync],
    );
    expect(uninterruptibleUnit(two, true)).toBe(false);
  });

  it('exempts a lone ROLLBACK or ABORT, unnamed or named, in any transaction state', () => {
    expect(uninterruptibleUnit(unitOf([parse('rollback'), bind(), execute, sync]), false)).toBe(true);
    expect(uninterruptibleUnit(unitOf([bind('_g1_0'), execute], [sync]), false)).toBe(true);
    expect(uninterruptibleUnit(unitOf([bind('_g1_1'), execute, sync]), false)).toBe(false);
    expect(uninterruptibleUnit(unitOf([bind('_g9_9'), execute, sync]), false)).toBe(false); // unknown
    // The unnamed statement parsed in an earlier unit: its text is not known here.
    expect(uninterruptibleUnit(unitOf([bind(), execute, sync]), false)).toBe(false);
    expect(uninterruptibleUnit(unitOf([execute, sync]), false)).toBe(false); // nothing bound
    expect(
      uninterruptibleUnit(unitOf([parse('rollback; select pg_sleep(9)'), bind(), execute, sync]), false),
    ).toBe(false);
  });
  it('times a text with a backslash (standard_conforming_strings may be off)', () => {
    expect(uninterruptibleUnit(unitOf([parse('rollback -- \\'), bind(), execute, sync]), false)).toBe(false);
  });

  it('times an Execute of a portal bound earlier, or rebound to something else', () => {
    // A portal bound in an earlier unit of the transaction (to anything): the Bind here is a decoy.
    expect(uninterruptibleUnit(unitOf([bindPortal('x', '_g1_0'), executePortal('p'), sync]), false)).toBe(
      false,
    );
    expect(uninterruptibleUnit(unitOf([bindPortal('p', '_g1_0'), executePortal('p'), sync]), false)).toBe(
      true,
    );
    const rebound = unitOf([bindPortal('p', '_g1_0'), bindPortal('p', '_g1_1'), executePortal('p'), sync]);
    expect(uninterruptibleUnit(rebound, false)).toBe(false);
  });
});
