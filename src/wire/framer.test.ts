import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cstr, int16, int32, tagged } from '../../test/helpers/messages.js';
import { GatewayError } from '../errors.js';
import { MessageFramer } from './framer.js';
import { Frontend } from './protocol.js';

/** Feeds `chunks` to a fresh framer and returns every message it yielded. */
function frame(chunks: readonly Uint8Array[], max = 1 << 20): { out: Buffer[]; framer: MessageFramer } {
  const framer = new MessageFramer(() => max);
  return { out: chunks.flatMap((c) => framer.push(c)), framer };
}

/** Cuts `bytes` at the given offsets (any order, duplicates and out-of-range ones ignored). */
function cut(bytes: Buffer, offsets: readonly number[]): Buffer[] {
  const points = [...new Set(offsets)].filter((o) => o > 0 && o < bytes.length).sort((a, b) => a - b);
  return [0, ...points].map((from, i) => bytes.subarray(from, points[i] ?? bytes.length));
}

/** One message of each frontend type the gateway sees after login, plus empty and large bodies. */
const samples: [string, Buffer][] = [
  ['Query', tagged(Frontend.Query, cstr('select 1'))],
  ['Parse', tagged(Frontend.Parse, cstr('s1'), cstr('select $1'), int16(1), int32(23))],
  ['Bind', tagged(Frontend.Bind, cstr(''), cstr('s1'), int16(0), int16(1), int32(1), '1', int16(0))],
  ['Describe', tagged(Frontend.Describe, 'S', cstr('s1'))],
  ['Execute', tagged(Frontend.Execute, cstr(''), int32(0))],
  ['Close', tagged(Frontend.Close, 'P', cstr(''))],
  ['Sync', tagged(Frontend.Sync)],
  ['Flush', tagged(Frontend.Flush)],
  ['CopyData (large)', tagged(Frontend.CopyData, Buffer.alloc(70_000, 0x61))],
  ['CopyDone', tagged(Frontend.CopyDone)],
  ['CopyFail', tagged(Frontend.CopyFail, cstr('why'))],
  ['FunctionCall', tagged(Frontend.FunctionCall, int32(1), int16(0), int16(1), int32(2), 'ab', int16(0))],
  ['Terminate', tagged(Frontend.Terminate)],
  ['UTF-8 Query', tagged(Frontend.Query, cstr("select 'żółw 🐢'"))],
];

describe('MessageFramer', () => {
  const stream = Buffer.concat([
    tagged('Q', 'select 1\0'),
    tagged('S', ''),
    tagged('P', 'x\0select 2\0\0\0'),
  ]);

  it('yields the same messages wherever TCP splits the stream', () => {
    for (let a = 0; a <= stream.length; a++) {
      for (let b = a; b <= stream.length; b++) {
        const framer = new MessageFramer(() => 1024);
        const out = [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)].flatMap((c) =>
          framer.push(c),
        );
        expect(Buffer.concat(out)).toEqual(stream);
        expect(out).toHaveLength(3);
        expect(framer.bufferedBytes).toBe(0);
      }
    }
  });

  it.each(samples)('yields a %s split at every byte offset', (_name, message) => {
    // Every offset of small messages; for the large one, every offset of its header and a stride.
    const step = message.length > 1000 ? 997 : 1;
    for (let at = 0; at <= message.length; at = at < 16 ? at + 1 : at + step) {
      const { out, framer } = frame([message.subarray(0, at), message.subarray(at)]);
      // Buffer.equals: toEqual compares a 70 kB buffer index by index, slowly.
      expect(out).toHaveLength(1);
      expect(out[0]?.equals(message)).toBe(true);
      expect(framer.bufferedBytes).toBe(0);
    }
  });

  it('yields every sample fed one byte at a time, with nothing early', () => {
    for (const [, message] of samples.filter(([, m]) => m.length < 1000)) {
      const framer = new MessageFramer(() => 1 << 20);
      for (let i = 0; i < message.length - 1; i++) {
        expect(framer.push(message.subarray(i, i + 1))).toEqual([]);
        expect(framer.bufferedBytes).toBe(i + 1);
      }
      expect(framer.push(message.subarray(-1))).toEqual([message]);
    }
  });

  it('yields any sequence of messages however it is cut (property)', () => {
    const messageArb = fc
      .tuple(fc.integer({ min: 0x20, max: 0x7e }), fc.uint8Array({ maxLength: 300 }))
      .map(([code, body]) => tagged(code, body));
    fc.assert(
      fc.property(
        fc.array(messageArb, { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (messages, offsets) => {
          const all = Buffer.concat(messages);
          const { out, framer } = frame(
            cut(
              all,
              offsets.map((o) => o % (all.length + 1)),
            ),
          );
          expect(out).toEqual(messages);
          expect(framer.bufferedBytes).toBe(0);
        },
      ),
    );
  });

  it('keeps an incomplete tail buffered until the rest arrives', () => {
    const query = tagged('Q', cstr('select 1'));
    const { out, framer } = frame([Buffer.concat([query, query.subarray(0, 7)])]);
    expect(out).toEqual([query]);
    expect(framer.bufferedBytes).toBe(7);
    expect(framer.push(query.subarray(7))).toEqual([query]);
    expect(framer.push(new Uint8Array(0))).toEqual([]);
  });

  it('accepts a message of exactly the maximum size and refuses one byte more', () => {
    const message = tagged('d', Buffer.alloc(95));
    expect(message.length).toBe(100);
    expect(frame([message], 100).out).toEqual([message]);
    expect(() => frame([tagged('d', Buffer.alloc(96))], 100)).toThrowError(GatewayError);
  });

  it('refuses an oversized message from its length prefix alone', () => {
    const framer = new MessageFramer(() => 100);
    const head = Buffer.from([0x70, 0x7f, 0xff, 0xff, 0xff]);
    expect(() => framer.push(head)).toThrowError(GatewayError);
  });

  it('refuses a length below the header size', () => {
    const framer = new MessageFramer(() => 100);
    expect(() => framer.push(Buffer.from([0x51, 0, 0, 0, 2]))).toThrowError(/invalid message length/);
    // Read signed, as Postgres reads it: a negative length is invalid, not too large.
    expect(() =>
      new MessageFramer(() => 1 << 20).push(Buffer.from([0x51, 0xff, 0xff, 0xff, 0xf0])),
    ).toThrowError(/invalid message length/);
  });

  it('refuses an unknown type from its first byte, before any length arrives', () => {
    const framer = new MessageFramer(
      () => 100,
      (code) => code !== 0x38,
    );
    expect(() => framer.push(Buffer.from([0x38]))).toThrowError(/invalid frontend message type 56/);
    // Also when it follows a good message in the same chunk.
    const ok = new MessageFramer(
      () => 100,
      (code) => code !== 0x38,
    );
    expect(() => ok.push(Buffer.concat([tagged('S'), Buffer.from([0x38])]))).toThrowError(/type 56/);
  });

  describe('holding from a type on (the login phase)', () => {
    const holdsQuery = () =>
      new MessageFramer(
        () => 64,
        undefined,
        (code) => code === 0x51,
      );
    const password = tagged('p', cstr('secret'));
    // Larger than the framer's limit: held messages are not checked, the session's framer checks.
    const query = tagged('Q', cstr(`select '${'x'.repeat(200)}'`));
    const stream = Buffer.concat([password, password, query, password]);

    it('yields what comes before the held type and keeps the rest whole, wherever TCP splits', () => {
      for (let a = 0; a <= stream.length; a++) {
        for (let b = a; b <= stream.length; b += a < 40 ? 1 : 7) {
          const framer = holdsQuery();
          const out = [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)].flatMap((c) =>
            framer.push(c),
          );
          expect(out).toEqual([password, password]);
          expect(framer.heldType).toBe(0x51);
          expect(framer.takeBuffered().equals(Buffer.concat([query, password]))).toBe(true);
          expect(framer.heldType).toBeUndefined();
        }
      }
    });

    it('reports nothing held while the front message is of another type, or absent', () => {
      const framer = holdsQuery();
      expect(framer.heldType).toBeUndefined();
      expect(framer.push(password.subarray(0, 3))).toEqual([]);
      expect(framer.heldType).toBeUndefined();
      expect(framer.push(Buffer.concat([password.subarray(3), query.subarray(0, 1)]))).toEqual([password]);
      expect(framer.heldType).toBe(0x51);
      expect(framer.push(query.subarray(1))).toEqual([]);
      expect(framer.bufferedBytes).toBe(query.length);
    });

    it('still refuses an oversized message of a type it frames', () => {
      expect(() => holdsQuery().push(tagged('p', Buffer.alloc(100)))).toThrowError(GatewayError);
    });
  });
});
