import { describe, expect, it } from 'vitest';
import { int16, int32, tagged } from '../../test/helpers/messages.js';
import { frontendProblem, isFrontendType } from './frontend-check.js';

describe('frontendProblem', () => {
  it.each([
    ['Query', tagged('Q', 'select 1\0')],
    ['Parse', tagged('P', 's1\0', 'select $1\0', int16(1), int32(23))],
    [
      'Bind',
      tagged('B', '\0', 's1\0', int16(1), int16(0), int16(2), int32(1), '1', int32(-1), int16(1), int16(0)),
    ],
    ['Describe', tagged('D', 'S', 's1\0')],
    ['Close portal', tagged('C', 'P', '\0')],
    ['Execute', tagged('E', '\0', int32(0))],
    ['Sync', tagged('S')],
    ['Flush', tagged('H')],
    ['CopyData', tagged('d', 'anything')],
    ['CopyDone', tagged('c')],
    ['CopyFail', tagged('f', 'why\0')],
    ['Terminate', tagged('X')],
    ['FunctionCall', tagged('F', int32(1), int16(0), int16(1), int32(2), 'ab', int16(0))],
  ])('accepts a well-formed %s', (_name, message) => {
    expect(frontendProblem(message)).toBeUndefined();
  });

  it.each([
    ['an unknown type', tagged('8', 'x')],
    ['a PasswordMessage', tagged('p', 'secret\0')],
    ['a Query without NUL', tagged('Q', 'select 1')],
    ['a Parse whose name lacks its NUL', tagged('P', 'unterminated')],
    ['a Parse with more types than bytes', tagged('P', '\0', 'select 1\0', int16(3), int32(23))],
    ['a Parse claiming 65,535 types it does not carry', tagged('P', '\0', 'select 1\0', int16(-1))],
    [
      'a Bind whose parameter overruns',
      tagged('B', '\0', '\0', int16(0), int16(1), int32(100), 'x', int16(0)),
    ],
    ['a Bind with trailing bytes', tagged('B', '\0', '\0', int16(0), int16(0), int16(0), 'junk')],
    ['a Describe of an unknown kind', tagged('D', 'X', 'a\0')],
    ['an Execute without its row limit', tagged('E', '\0')],
    ['a Sync with a body', tagged('S', 'x')],
  ])('refuses %s', (_name, message) => {
    expect(frontendProblem(message)).toMatchObject({
      sqlstate: '08P01',
      message: expect.stringMatching(/invalid/),
    });
  });

  it.each([
    ['a Parse', tagged('P', Buffer.from([0x61, 0xff, 0]), 'select 1\0', int16(0))],
    ['a Bind portal', tagged('B', Buffer.from([0xc3, 0]), '\0', int16(0), int16(0), int16(0))],
    ['a Bind statement', tagged('B', '\0', Buffer.from([0xed, 0xa0, 0x80, 0]), int16(0), int16(0), int16(0))],
    ['a Describe', tagged('D', 'S', Buffer.from([0x80, 0]))],
    ['a Close', tagged('C', 'P', Buffer.from([0xfe, 0]))],
    ['an Execute', tagged('E', Buffer.from([0xc0, 0xaf, 0]), int32(0))],
  ])('refuses a name that is not UTF-8 in %s, as Postgres does (22021)', (_name, message) => {
    expect(frontendProblem(message)).toMatchObject({ sqlstate: '22021' });
  });

  it('accepts names in any script', () => {
    expect(frontendProblem(tagged('P', 'déclaration_语句_🙂\0', 'select 1\0', int16(0)))).toBeUndefined();
    expect(frontendProblem(tagged('E', 'portail_é\0', int32(0)))).toBeUndefined();
  });

  it('reads counts unsigned, as Postgres does: 40,000 parameter types, formats and values', () => {
    const n = 40_000;
    const many = (part: Buffer) => Buffer.concat(Array.from({ length: n }, () => part));
    expect(frontendProblem(tagged('P', '\0', 'select 1\0', int16(n), many(int32(23))))).toBeUndefined();
    const bind = tagged(
      'B',
      '\0',
      '\0',
      int16(n),
      many(int16(0)),
      int16(n),
      many(Buffer.concat([int32(1), Buffer.from('1')])),
      int16(0),
    );
    expect(frontendProblem(bind)).toBeUndefined();
  });

  it('knows the types a client may send after login', () => {
    expect(isFrontendType('Q'.charCodeAt(0))).toBe(true);
    expect(isFrontendType('p'.charCodeAt(0))).toBe(false);
    expect(isFrontendType(0)).toBe(false);
  });
});
