import { message } from '../../src/wire/protocol.js';

/**
 * Protocol messages built by hand for tests, on top of the gateway's own writer
 * (`message` in src/wire/protocol.ts): a tagged message is a type byte, an int32 length and the
 * parts in order. Strings are written as UTF-8 without a terminator (`cstr` adds one), number
 * arrays as raw bytes. For bytes a driver would never send (lying lengths, bodies cut short),
 * build the Buffer directly.
 */

export type Part = Uint8Array | string | readonly number[];

/** A tagged message: `code` as a number or a one-letter string ('Q'). */
export function tagged(code: number | string, ...parts: Part[]): Buffer {
  const type = typeof code === 'string' ? code.charCodeAt(0) : code;
  return message(
    type,
    ...parts.map((p) => (typeof p === 'string' || p instanceof Uint8Array ? p : Buffer.from(p))),
  );
}

/** An untagged packet (StartupMessage, SSLRequest, CancelRequest…): int32 length, int32 code, body. */
export function untagged(code: number, body: Uint8Array = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(8 + body.length, 0);
  head.writeUInt32BE(code, 4);
  return Buffer.concat([head, body]);
}

/** A big-endian int16; negative values in two's complement (-1 is ff ff). */
export function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}

/** A big-endian int32; negative values in two's complement (-1 is ff ff ff ff). */
export function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** A NUL-terminated UTF-8 string. */
export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}
