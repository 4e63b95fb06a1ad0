/** Frontend message builders: the bytes the fuzz sends, and the pieces a sequence is made of. */

export const cstr = (s: string | Uint8Array) =>
  Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s), Buffer.from([0])]);
export const i16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
export const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
};

/** A tagged message; `declared` overrides the length field (to lie about the body). */
export function tagged(code: number | string, body: Buffer, declared?: number): Buffer {
  const head = Buffer.alloc(5);
  head[0] = typeof code === 'string' ? code.charCodeAt(0) : code;
  head.writeUInt32BE(declared ?? 4 + body.length, 1);
  return Buffer.concat([head, body]);
}

/** One element of a fuzz sequence. */
export interface Piece {
  label: string;
  bytes: Buffer;
  /**
   * The bytes are whole messages with truthful lengths, so what follows is still read as the
   * next message. False when they desynchronise framing (truncated, lying or huge lengths,
   * untagged packets), after which the server may rightly wait for bytes that never come.
   */
  framed: boolean;
  /** A Terminate: the server closes after it. */
  terminates?: boolean;
  /** Protocol messages in `bytes` (a whole extended unit is one piece). */
  messages: number;
}

export const piece = (
  label: string,
  bytes: Buffer,
  framed = true,
  terminates = false,
  messages = 1,
): Piece => ({
  label,
  bytes,
  framed,
  terminates,
  messages,
});
