import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { deallocateAllUnit } from './session-messages.js';

const parse = (sql: string, name = '') => tagged('P', cstr(name), cstr(sql), int16(0));
const bind = (statement = '') => tagged('B', cstr(''), cstr(statement), int16(0), int16(0), int16(0));
const describe_ = (kind: 'S' | 'P') => tagged('D', kind, cstr(''));
const execute = tagged('E', cstr(''), int32(0));
const sync = tagged('S');

/** A whole unit found at the front of the queue (fails the test otherwise). */
const whole = (queue: Buffer[]) => {
  const found = deallocateAllUnit(queue);
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

describe('deallocateAllUnit', () => {
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
});
