import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import {
  addBatch,
  emptyUnit,
  parseText,
  uninterruptibleQuery,
  uninterruptibleUnit,
} from './uninterruptible.js';

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

describe('UnitSoFar: what a unit ran, as simple Queries would', () => {
  const parse = (sql: string, name = '') => tagged('P', cstr(name), cstr(sql), int16(0));
  const bind = (statement = '', portal = '') =>
    tagged('B', cstr(portal), cstr(statement), int16(0), int16(0), int16(0));
  const bindOneParam = tagged('B', cstr(''), cstr(''), int16(1), int16(0), int16(1), int32(1), '7', int16(0));
  const execute = (portal = '') => tagged('E', cstr(portal), int32(0));
  const describePortal = tagged('D', 'P', cstr(''));
  const sync = tagged('S');
  const ran = (...batches: Buffer[][]) => {
    const unit = emptyUnit();
    for (const batch of batches) addBatch(unit, batch, () => false);
    return { runs: unit.runs?.map(parseText), parsed: unit.parses.map(parseText) };
  };

  it("gives the unnamed statements it executed, bound without parameters (psycopg's BEGIN)", () => {
    expect(ran([parse('BEGIN'), bind(), describePortal, execute(), sync])).toEqual({
      runs: ['BEGIN'],
      parsed: ['BEGIN'],
    });
    expect(
      ran([parse('SET LOCAL a.b = 1'), bind(), execute()], [parse('SHOW a.b'), bind(), execute(), sync]),
    ).toEqual({ runs: ['SET LOCAL a.b = 1', 'SHOW a.b'], parsed: ['SET LOCAL a.b = 1', 'SHOW a.b'] });
    // A prepare alone runs nothing; its Parse is still what the unit did.
    expect(ran([parse('select 1', 's1'), sync])).toEqual({ runs: [], parsed: ['select 1'] });
  });

  it('gives nothing when a statement had parameters, was named, or was bound before the unit', () => {
    expect(ran([parse('select $1'), bindOneParam, execute(), sync]).runs).toBeUndefined();
    expect(ran([parse('begin', 's'), bind('s'), execute(), sync]).runs).toBeUndefined();
    expect(ran([execute('p'), sync]).runs).toBeUndefined();
    expect(ran([parse('begin'), bind('', 'p'), bind('s', 'p'), execute('p'), sync]).runs).toBeUndefined();
  });
});

describe('UnitSoFar: bounded', () => {
  it('keeps no Parse once the unit cannot be replayed, and gives up past 64 statements', () => {
    const parse = (sql: string) => tagged('P', cstr(''), cstr(sql), int16(0));
    const bind = tagged('B', cstr(''), cstr(''), int16(0), int16(0), int16(0));
    const execute = (portal = '') => tagged('E', cstr(portal), int32(0));
    const unit = emptyUnit();
    addBatch(unit, [parse('set a.b = 1'), bind, execute('elsewhere'), parse('select 1')], () => false);
    expect(unit.runs).toBeUndefined();
    expect(unit.parses).toEqual([]);
    const long = emptyUnit();
    const batch = Array.from({ length: 65 }, () => [parse('show x'), bind, execute()]).flat();
    addBatch(long, batch, () => false);
    expect(long.runs).toBeUndefined();
    expect(long.parses).toEqual([]);
  });
});
