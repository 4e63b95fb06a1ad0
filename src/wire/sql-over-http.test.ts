import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { message } from './protocol.js';
import {
  beginStatement,
  errorJson,
  extendedQuery,
  MAX_PARAMS,
  parseCommandTag,
  ReplyReader,
  requestMessages,
  resultJson,
} from './sql-over-http.js';

const int16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
};

function rowDescription(names: string[]): Buffer {
  const parts = names.map((n, i) =>
    Buffer.concat([
      Buffer.from(`${n}\0`),
      int32(0),
      int16(0),
      int32(i === 0 ? 23 : 25),
      int16(i === 0 ? 4 : -1),
      int32(-1),
      int16(0),
    ]),
  );
  return message(0x54, int16(names.length), ...parts);
}
const dataRow = (values: (string | null)[]) =>
  message(
    0x44,
    int16(values.length),
    ...values.flatMap((v) => (v === null ? [int32(-1)] : [int32(Buffer.byteLength(v)), Buffer.from(v)])),
  );

describe('SQL over HTTP codec', () => {
  it('writes Parse/Bind/Describe/Execute with text parameters and nulls', () => {
    const [parse, bind, describe, execute] = extendedQuery('select $1, $2', ['é', null]);
    expect(parse?.toString('latin1')).toBe('P\0\0\0\x15\0select $1, $2\0\0\0');
    expect(
      bind
        ?.subarray(5)
        .equals(
          Buffer.concat([Buffer.from('\0\0\0\0\0\x02'), int32(2), Buffer.from('é'), int32(-1), int16(0)]),
        ),
    ).toBe(true);
    expect(describe?.toString('latin1')).toBe('D\0\0\0\x06P\0');
    expect(execute?.toString('latin1')).toBe('E\0\0\0\x09\0\0\0\0\0');
    const batch = requestMessages([{ query: 'select 1', params: [] }], beginStatement({}));
    expect(batch.map((m) => String.fromCharCode(m[0] as number)).join('')).toBe('PBDEPBDES');
  });

  it('binds the most parameters a Bind can carry', () => {
    const params = Array.from({ length: MAX_PARAMS }, (_, i) => (i % 2 === 0 ? '1' : null));
    const bind = extendedQuery('select 1', params)[1] as Buffer;
    expect(bind.readUInt16BE(5 + 4)).toBe(MAX_PARAMS);
    // Per value: a 4-byte length, then one byte for '1' (none for a null).
    expect(bind.length).toBe(5 + 2 + 2 + 2 + MAX_PARAMS * 4 + Math.ceil(MAX_PARAMS / 2) + 2);
  });

  it('spells BEGIN with the batch options', () => {
    expect(beginStatement({ isolationLevel: 'RepeatableRead', readOnly: true, deferrable: true })).toBe(
      'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY DEFERRABLE',
    );
    expect(beginStatement({ isolationLevel: 'ReadUncommitted', readOnly: false })).toBe(
      'BEGIN ISOLATION LEVEL READ UNCOMMITTED READ WRITE',
    );
  });

  it('reads command tags like node-postgres', () => {
    expect(parseCommandTag('INSERT 0 3')).toEqual({ command: 'INSERT', rowCount: 3 });
    expect(parseCommandTag('SELECT 12')).toEqual({ command: 'SELECT', rowCount: 12 });
    expect(parseCommandTag('CREATE TABLE')).toEqual({ command: 'CREATE', rowCount: null });
    expect(parseCommandTag('')).toEqual({ command: null, rowCount: null });
  });

  it('reads results, errors and the final status; stops keeping rows past its limit', () => {
    const reader = new ReplyReader(1000);
    for (const m of [
      message(0x31),
      message(0x32),
      rowDescription(['n', '__proto__']),
      dataRow(['1', null]),
      message(0x43, 'SELECT 1\0'),
      message(0x45, 'SERROR\0C42P01\0Mnope\0P8\0\0'),
      message(0x5a, 'E'),
    ])
      reader.push(m);
    expect(reader.status).toBe('E');
    expect(reader.error).toEqual({ message: 'nope', severity: 'ERROR', code: '42P01', position: '8' });
    expect(resultJson(reader.results[0] as never, true)).toMatchObject({
      command: 'SELECT',
      rowCount: 1,
      rows: [['1', null]],
    });
    const objects = resultJson(reader.results[0] as never, false).rows as Record<string, unknown>[];
    expect(Object.entries(objects[0] as object)).toEqual([
      ['n', '1'],
      ['__proto__', null],
    ]);
    const small = new ReplyReader(10);
    small.push(rowDescription(['x']));
    small.push(dataRow(['0123456789']));
    expect(small.overflowed).toBe(true);
    expect(errorJson(new Map())).toEqual({ message: 'unknown error' });
  });

  it('counts what the JSON will take, never less, and at most a little more', () => {
    const text = fc.string({
      unit: fc.constantFrom('a', 'é', '"', '\\', '\n', '\u0001', '\u001f', '🙂'),
      maxLength: 40,
    });
    const results = fc.array(
      fc.record({
        names: fc.array(
          text.filter((n) => n.length > 0),
          { minLength: 1, maxLength: 6 },
        ),
        rows: fc.array(fc.array(fc.option(text), { minLength: 6, maxLength: 6 }), { maxLength: 8 }),
      }),
      { minLength: 1, maxLength: 4 },
    );
    fc.assert(
      fc.property(results, fc.boolean(), (shapes, arrayMode) => {
        const messages = shapes.flatMap(({ names, rows }) => [
          rowDescription(names),
          ...rows.map((r) => dataRow(r.slice(0, names.length))),
          message(0x43, `SELECT ${rows.length}\0`),
        ]);
        const unlimited = new ReplyReader(Number.MAX_SAFE_INTEGER, arrayMode);
        for (const m of messages) unlimited.push(m);
        // Each result's JSON (the batch's 14-byte `{"results":[…]}` around them is not counted).
        const bytes = unlimited.results.reduce(
          (sum, r) => sum + Buffer.byteLength(JSON.stringify(resultJson(r, arrayMode))),
          0,
        );
        const under = new ReplyReader(bytes - 1, arrayMode);
        for (const m of messages) under.push(m);
        expect(under.overflowed).toBe(true);
        const roomy = new ReplyReader(Math.ceil(bytes * 1.2) + 150 * shapes.length, arrayMode);
        for (const m of messages) roomy.push(m);
        expect(roomy.overflowed).toBe(false);
      }),
    );
  });

  it('counts column names and escapes, so a small request cannot build a huge response', () => {
    // 1,000 results of a wide empty table: no rows at all, megabytes of field descriptions.
    const wide = rowDescription(Array.from({ length: 1600 }, (_, i) => `c${i}`.padEnd(63, 'x')));
    const reader = new ReplyReader(10_000_000);
    for (let i = 0; i < 1000 && !reader.overflowed; i++) {
      reader.push(wide);
      reader.push(message(0x43, 'SELECT 0\0'));
    }
    expect(reader.overflowed).toBe(true);
    expect(reader.results.length).toBeLessThan(100);
    // A value of control characters is 6 bytes each in JSON.
    const controls = new ReplyReader(5_000_000);
    controls.push(rowDescription(['big']));
    controls.push(dataRow(['\u0001'.repeat(1_000_000)]));
    expect(controls.overflowed).toBe(true);
  });

  it('never throws on arbitrary DataRow bytes beyond RangeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const reader = new ReplyReader(1 << 20);
        try {
          reader.push(message(0x44, bytes));
        } catch (err) {
          expect(err).toBeInstanceOf(RangeError);
        }
      }),
    );
  });
});
