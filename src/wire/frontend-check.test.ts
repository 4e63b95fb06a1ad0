import { describe, expect, it } from 'vitest';
import { frontendProblem, isFrontendType } from './frontend-check.js';

const msg = (code: string, ...parts: (string | number[] | Buffer)[]) => {
  const body = Buffer.concat(
    parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p as number[]))),
  );
  const out = Buffer.alloc(5 + body.length);
  out.write(code, 0, 'latin1');
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
};
const int16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const int32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

describe('frontendProblem', () => {
  it.each([
    ['Query', msg('Q', 'select 1\0')],
    ['Parse', msg('P', 's1\0', 'select $1\0', int16(1), int32(23))],
    [
      'Bind',
      msg('B', '\0', 's1\0', int16(1), int16(0), int16(2), int32(1), '1', int32(-1), int16(1), int16(0)),
    ],
    ['Describe', msg('D', 'S', 's1\0')],
    ['Close portal', msg('C', 'P', '\0')],
    ['Execute', msg('E', '\0', int32(0))],
    ['Sync', msg('S')],
    ['Flush', msg('H')],
    ['CopyData', msg('d', 'anything')],
    ['CopyDone', msg('c')],
    ['CopyFail', msg('f', 'why\0')],
    ['Terminate', msg('X')],
    ['FunctionCall', msg('F', int32(1), int16(0), int16(1), int32(2), 'ab', int16(0))],
  ])('accepts a well-formed %s', (_name, message) => {
    expect(frontendProblem(message)).toBeUndefined();
  });

  it.each([
    ['an unknown type', msg('8', 'x')],
    ['a PasswordMessage', msg('p', 'secret\0')],
    ['a Query without NUL', msg('Q', 'select 1')],
    ['a Parse whose name lacks its NUL', msg('P', 'unterminated')],
    ['a Parse with more types than bytes', msg('P', '\0', 'select 1\0', int16(3), int32(23))],
    ['a Parse with a negative type count', msg('P', '\0', 'select 1\0', int16(-1))],
    ['a Bind whose parameter overruns', msg('B', '\0', '\0', int16(0), int16(1), int32(100), 'x', int16(0))],
    ['a Bind with trailing bytes', msg('B', '\0', '\0', int16(0), int16(0), int16(0), 'junk')],
    ['a Describe of an unknown kind', msg('D', 'X', 'a\0')],
    ['an Execute without its row limit', msg('E', '\0')],
    ['a Sync with a body', msg('S', 'x')],
  ])('refuses %s', (_name, message) => {
    expect(frontendProblem(message)).toMatch(/invalid/);
  });

  it('knows the types a client may send after login', () => {
    expect(isFrontendType('Q'.charCodeAt(0))).toBe(true);
    expect(isFrontendType('p'.charCodeAt(0))).toBe(false);
    expect(isFrontendType(0)).toBe(false);
  });
});
