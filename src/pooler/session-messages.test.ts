import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { deallocateUnit } from './session-messages.js';

const parse = (sql: string, name = '') => tagged('P', cstr(name), cstr(sql), int16(0));
const bind = (statement = '') => tagged('B', cstr(''), cstr(statement), int16(0), int16(0), int16(0));
const describe_ = (kind: 'S' | 'P') => tagged('D', kind, cstr(''));
const execute = tagged('E', cstr(''), int32(0));
const sync = tagged('S');

/** The client's statements, for DEALLOCATE of a name. */
const owned = (...names: string[]) => ({ has: (name: string) => names.includes(name) });
const none = owned();
/** DEALLOCATE ALL as the only statement that matters here. */
const deallocateAllUnit = (queue: Buffer[]) => deallocateUnit(queue, none);

/** A whole unit found at the front of the queue (fails the test otherwise). */
const whole = (queue: Buffer[], names = none) => {
  const found = deallocateUnit(queue, names);
  if (typeof found !== 'object') throw new Error(`not a whole unit: ${found}`);
  return found;
};

/** The reply codes of a unit as a string ('1' ParseComplete, '2' BindComplete, 'n' NoData...). */
const codes = (replies: Buffer) => {
  const out: string[] = [];
  for (let i = 0; i < replies.length; i += 1 + replies.readUInt32BE(i + 1))
    out.push(String.fromCharCode(replies[i] as number));
  return out.join('');
};

describe('deallocateUnit', () => {
  it("answers libpq's PQexecParams of DEALLOCATE ALL as Postgres would", () => {
    const unit = [parse('DEALLOCATE ALL'), bind(), describe_('P'), execute, sync];
    const found = whole([...unit, tagged('Q', cstr('select 1'))]);
    expect(found.length).toBe(5);
    expect(codes(found.replies)).toBe('12nC');
    expect(found.replies.includes(Buffer.from('DEALLOCATE ALL\0'))).toBe(true);
  });

  it('takes the other spellings and a Describe of the statement', () => {
    const found = whole([parse('deallocate prepare all -- c'), describe_('S'), bind(), execute, sync]);
    expect(codes(found.replies)).toBe('1tn2C');
  });

  it('leaves everything else to the statement guard', () => {
    const cases: Buffer[][] = [
      [parse('DEALLOCATE ALL'), bind(), execute, execute, sync],
      [parse('DEALLOCATE ALL'), sync], // prepared, never run
      [parse('DEALLOCATE ALL', 's1'), bind('other'), execute, sync],
      [parse('DEALLOCATE ALL'), bind(), execute, parse('select 1'), sync],
      [parse('DEALLOCATE ALL; select 1'), bind(), execute, sync],
      [parse('DISCARD ALL'), bind(), execute, sync],
      [parse('DEALLOCATE s1'), bind(), execute, sync],
      [parse(`/* ${'x'.repeat(1100)} */ DEALLOCATE ALL`), bind(), execute, sync], // not decoded
      [tagged('Q', cstr('DEALLOCATE ALL'))],
      [],
    ];
    for (const unit of cases) expect(deallocateAllUnit(unit)).toBeUndefined();
  });

  it('waits for the rest of such a unit, however TCP split it', () => {
    const unit = [parse('DEALLOCATE ALL'), bind(), describe_('P'), execute, sync];
    for (let have = 1; have < unit.length; have++)
      expect(deallocateAllUnit(unit.slice(0, have))).toBe('incomplete');
    expect(
      deallocateAllUnit([parse('DEALLOCATE ALL'), bind(), tagged('Q', cstr('select 1'))]),
    ).toBeUndefined();
  });

  it("answers DEALLOCATE of one of the client's statements, however it is spelt", () => {
    const names = owned('_pg3_0', 'S1', 'prepare', 'ü');
    for (const [sql, name] of [
      ['DEALLOCATE _pg3_0', '_pg3_0'],
      ['deallocate prepare "S1"; -- c', 'S1'],
      ['DEALLOCATE prepare', 'prepare'],
      [`DEALLOCATE U&"\\00fc"`, 'ü'],
      [`DEALLOCATE PREPARE U&"!00fc" UESCAPE '!'`, 'ü'],
    ] as const) {
      const found = whole([parse(sql), bind(), describe_('P'), execute, sync], names);
      expect(found.name, sql).toBe(name);
      expect(codes(found.replies), sql).toBe('12nC');
      expect(found.replies.includes(Buffer.from('DEALLOCATE\0')), sql).toBe(true);
      expect(found.replies.includes(Buffer.from('DEALLOCATE ALL\0')), sql).toBe(false);
    }
    expect(whole([parse('DEALLOCATE ALL'), bind(), execute, sync], names).name).toBeUndefined();
  });

  it('leaves a name the client never prepared, and any other shape, to the guard and the database', () => {
    const names = owned('s1', 'S1');
    const cases: Buffer[][] = [
      [parse('DEALLOCATE s2'), bind(), execute, sync], // SQL-level PREPARE, or 26000
      [parse('DEALLOCATE "s2"'), bind(), execute, sync],
      [parse('DEALLOCATE s1 x'), bind(), execute, sync], // a syntax error
      [parse("DEALLOCATE 's1'"), bind(), execute, sync],
      [parse('DEALLOCATE s1; select 1'), bind(), execute, sync],
      [parse('DEALLOCATE s1'), bind(), execute, parse('select 1'), sync],
      [parse('DEALLOCATE s1'), sync],
    ];
    for (const unit of cases) expect(deallocateUnit(unit, names)).toBeUndefined();
    for (let have = 1; have < 4; have++)
      expect(deallocateUnit([parse('DEALLOCATE s1'), bind(), execute, sync].slice(0, have), names)).toBe(
        'incomplete',
      );
  });
});
