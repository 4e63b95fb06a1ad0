import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { backendMessages, firstRow, hasError, lastReadyStatus, splitCopyIn } from './backend-scan.js';
import { Backend } from './protocol.js';

const ready = (status: 'I' | 'T' | 'E') => tagged(Backend.ReadyForQuery, status);
const complete = (tag: string) => tagged(Backend.CommandComplete, cstr(tag));
const error = (code: string) =>
  tagged(Backend.ErrorResponse, cstr('SERROR'), cstr(`C${code}`), cstr('Mnope'), [0]);
const notice = tagged('N', cstr('SNOTICE'), cstr('Mhello'), [0]);
const rowDescription = tagged(
  'T',
  int16(1),
  cstr('a'),
  int32(0),
  int16(0),
  int32(25),
  int16(-1),
  int32(-1),
  int16(0),
);
/** A DataRow; null is SQL NULL (length -1). */
const dataRow = (...values: (string | null)[]) =>
  tagged(
    'D',
    int16(values.length),
    ...values.flatMap((v) => (v === null ? [int32(-1)] : [int32(Buffer.byteLength(v)), v])),
  );
const copyIn = tagged(Backend.CopyInResponse, [0], int16(2), int16(0), int16(0));

/** The same bytes at a non-zero offset of a larger buffer, as a socket chunk's subarray would be. */
function offset(bytes: Buffer): Buffer {
  const big = Buffer.concat([Buffer.from('garbage'), bytes, Buffer.from('tail')]);
  return big.subarray(7, 7 + bytes.length);
}

describe('backendMessages', () => {
  it('walks each message once, with its code and bounds', () => {
    const parts = [rowDescription, dataRow('1'), complete('SELECT 1'), ready('I')];
    const response = Buffer.concat(parts);
    const seen = [...backendMessages(response)];
    expect(seen.map((m) => String.fromCharCode(m.code))).toEqual(['T', 'D', 'C', 'Z']);
    expect(seen.map((m) => response.subarray(m.start, m.end))).toEqual(parts);
    expect(seen.at(-1)?.end).toBe(response.length);
  });

  it('reads a response that sits at an offset of a larger buffer', () => {
    const response = offset(Buffer.concat([complete('SET'), ready('T')]));
    expect([...backendMessages(response)].map((m) => [m.code, m.start, m.end])).toEqual([
      [Backend.CommandComplete, 0, 9],
      [Backend.ReadyForQuery, 9, 15],
    ]);
  });

  it('yields nothing for an empty response or fewer than five bytes', () => {
    expect([...backendMessages(new Uint8Array(0))]).toEqual([]);
    expect([...backendMessages(ready('I').subarray(0, 4))]).toEqual([]);
    // A trailing partial header after whole messages is ignored too.
    expect([...backendMessages(Buffer.concat([ready('I'), Buffer.from([0x5a, 0, 0])]))]).toHaveLength(1);
  });

  it('reports a message whose body is cut short with its declared end, past the response', () => {
    const cutShort = dataRow('hello').subarray(0, 8);
    expect([...backendMessages(cutShort)]).toEqual([{ code: 0x44, start: 0, end: 16 }]);
  });

  it('finds the boundaries of any sequence of whole messages (property)', () => {
    const messageArb = fc
      .tuple(fc.integer({ min: 0x20, max: 0x7e }), fc.uint8Array({ maxLength: 64 }))
      .map(([code, body]) => tagged(code, body));
    fc.assert(
      fc.property(fc.array(messageArb, { maxLength: 10 }), (messages) => {
        const response = offset(Buffer.concat(messages));
        const seen = [...backendMessages(response)];
        expect(seen.map((m) => Buffer.from(response.subarray(m.start, m.end)))).toEqual(messages);
        expect(seen.map((m) => m.code)).toEqual(messages.map((m) => m[0]));
      }),
    );
  });
});

describe('lastReadyStatus', () => {
  it('is the status of the last ReadyForQuery', () => {
    expect(lastReadyStatus(Buffer.concat([complete('BEGIN'), ready('T')]))).toBe('T');
    expect(lastReadyStatus(Buffer.concat([ready('T'), error('22012'), ready('E')]))).toBe('E');
    expect(lastReadyStatus(offset(Buffer.concat([ready('E'), complete('ROLLBACK'), ready('I')])))).toBe('I');
  });

  it('is undefined without a ReadyForQuery', () => {
    expect(lastReadyStatus(new Uint8Array(0))).toBeUndefined();
    expect(
      lastReadyStatus(Buffer.concat([rowDescription, dataRow('1'), complete('SELECT 1')])),
    ).toBeUndefined();
  });
});

describe('splitCopyIn', () => {
  it('takes a CopyInResponse at the start and returns the rest as a view', () => {
    const tail = ready('I');
    const response = Buffer.concat([copyIn, tail]);
    const split = splitCopyIn(response);
    expect(split.copyIn && Buffer.from(split.copyIn)).toEqual(copyIn);
    expect(Buffer.from(split.rest)).toEqual(tail);
    expect(split.rest.buffer).toBe(response.buffer);
  });

  it('takes a CopyInResponse from the middle, joining what was before and after it', () => {
    const before = Buffer.concat([complete('SET'), notice]);
    const after = ready('I');
    const split = splitCopyIn(offset(Buffer.concat([before, copyIn, after])));
    expect(split.copyIn && Buffer.from(split.copyIn)).toEqual(copyIn);
    expect(Buffer.from(split.rest)).toEqual(Buffer.concat([before, after]));
  });

  it('takes only the first CopyInResponse', () => {
    const split = splitCopyIn(Buffer.concat([copyIn, copyIn]));
    expect(split.copyIn && Buffer.from(split.copyIn)).toEqual(copyIn);
    expect(Buffer.from(split.rest)).toEqual(copyIn);
  });

  it('returns the response itself when it has none', () => {
    const response = Buffer.concat([complete('COPY 0'), ready('I')]);
    expect(splitCopyIn(response)).toEqual({ copyIn: undefined, rest: response });
    expect(splitCopyIn(response).rest).toBe(response);
    const empty = new Uint8Array(0);
    expect(splitCopyIn(empty).rest).toBe(empty);
  });
});

describe('firstRow', () => {
  it('reads the values of the first DataRow, NULL as null', () => {
    const response = Buffer.concat([
      rowDescription,
      dataRow('1', null, '', 'żółw'),
      dataRow('2'),
      ready('I'),
    ]);
    expect(firstRow(response)).toEqual(['1', null, '', 'żółw']);
    expect(firstRow(offset(response))).toEqual(['1', null, '', 'żółw']);
  });

  it('reads a row of no columns as empty, and no row as undefined', () => {
    expect(firstRow(Buffer.concat([dataRow(), ready('I')]))).toEqual([]);
    expect(firstRow(Buffer.concat([complete('SET'), ready('I')]))).toBeUndefined();
    expect(firstRow(new Uint8Array(0))).toBeUndefined();
  });
});

describe('hasError', () => {
  it('sees an ErrorResponse anywhere in the response', () => {
    expect(hasError(Buffer.concat([error('42P01'), ready('I')]))).toBe(true);
    expect(hasError(offset(Buffer.concat([complete('BEGIN'), error('22012'), ready('E')])))).toBe(true);
  });

  it('is false for notices, rows and an empty response', () => {
    expect(hasError(Buffer.concat([notice, rowDescription, dataRow('E'), ready('I')]))).toBe(false);
    expect(hasError(new Uint8Array(0))).toBe(false);
  });
});
