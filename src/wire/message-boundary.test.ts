import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cstr, int32, tagged } from '../../test/helpers/messages.js';
import { MessageBoundary } from './message-boundary.js';

/** A backend stream: a row description, rows (one large), a command tag and ReadyForQuery. */
const stream = Buffer.concat([
  tagged('T', Buffer.from([0, 1]), cstr('x'), int32(0), Buffer.alloc(2), int32(25), Buffer.alloc(8)),
  tagged('D', Buffer.from([0, 1]), int32(3), 'abc'),
  tagged('D', Buffer.from([0, 1]), int32(70_000), Buffer.alloc(70_000, 0x61)),
  tagged('C', cstr('SELECT 2')),
  tagged('Z', 'I'),
]);

/** Offsets in `stream` where one message ends and the next begins. */
function boundaries(bytes: Buffer): Set<number> {
  const out = new Set<number>([0]);
  for (let at = 0; at < bytes.length; ) {
    at += 1 + bytes.readInt32BE(at + 1);
    out.add(at);
  }
  return out;
}

describe('MessageBoundary', () => {
  const ends = boundaries(stream);

  it('knows, after every prefix of the stream, whether it ends between two messages', () => {
    // Every split point, fed as two pieces: the header split at every offset too.
    for (let cut = 0; cut <= stream.length; cut += cut < 200 || cut > stream.length - 200 ? 1 : 997) {
      const b = new MessageBoundary();
      b.feed(stream.subarray(0, cut));
      expect(b.atBoundary, `after ${cut} bytes`).toBe(ends.has(cut));
      b.feed(stream.subarray(cut));
      expect(b.atBoundary).toBe(true);
    }
  });

  it('is not fooled by any chunking (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: stream.length }), { maxLength: 12 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const b = new MessageBoundary();
        let from = 0;
        for (const p of [...points, stream.length]) {
          b.feed(stream.subarray(from, p));
          from = p;
          expect(b.atBoundary).toBe(ends.has(p));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('has no boundary left once the stream shows a length no message can have', () => {
    const b = new MessageBoundary();
    b.feed(Buffer.from([0x44, 0, 0, 0, 2]));
    expect(b.atBoundary).toBe(false);
    b.feed(tagged('Z', 'I'));
    expect(b.atBoundary).toBe(false);
  });
});
