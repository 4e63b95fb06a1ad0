import { describe, expect, it } from 'vitest';
import { GatewayError } from '../errors.js';
import { MessageFramer } from './framer.js';

const message = (code: string, body: string) => {
  const b = Buffer.from(body);
  const out = Buffer.alloc(5 + b.length);
  out.write(code, 0, 'latin1');
  out.writeUInt32BE(4 + b.length, 1);
  b.copy(out, 5);
  return out;
};

describe('MessageFramer', () => {
  const stream = Buffer.concat([
    message('Q', 'select 1\0'),
    message('S', ''),
    message('P', 'x\0select 2\0\0\0'),
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

  it('refuses an oversized message from its length prefix alone', () => {
    const framer = new MessageFramer(() => 100);
    const head = Buffer.from([0x70, 0x7f, 0xff, 0xff, 0xff]);
    expect(() => framer.push(head)).toThrowError(GatewayError);
  });

  it('refuses a length below the header size', () => {
    const framer = new MessageFramer(() => 100);
    expect(() => framer.push(Buffer.from([0x51, 0, 0, 0, 2]))).toThrowError(/invalid message length/);
  });
});
