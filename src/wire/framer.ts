import { errors } from '../errors.js';

/**
 * Splits a byte stream of tagged protocol messages (1-byte code + int32 length) into whole
 * messages. It refuses a message from its length prefix alone, before buffering its body, so a
 * hostile length cannot make us allocate. TCP may split anywhere; the framer does not care.
 */
export class MessageFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /**
   * `maxMessageSize` may change over the connection's life (pre/post authentication).
   * `acceptsType`, when given, refuses a message by its first byte, before waiting for a body
   * whose length an unknown message (a second StartupMessage, garbage) may have made up.
   * `holdsType`, when given, stops framing at the first message of such a type: it and all
   * after it stay buffered, unchecked, for `takeBuffered` (the login phase leaves a pipelined
   * first query, which may be far larger than a login message, to the session's own framer).
   */
  constructor(
    private readonly maxMessageSize: () => number,
    private readonly acceptsType?: (code: number) => boolean,
    private readonly holdsType?: (code: number) => boolean,
  ) {}

  get bufferedBytes(): number {
    return this.buffered;
  }

  /** The type code of the held message at the front (see `holdsType`), else undefined. */
  get heldType(): number | undefined {
    if (this.buffered === 0 || !this.holdsType) return undefined;
    const code = (this.chunks[0] as Buffer)[0] as number;
    return this.holdsType(code) ? code : undefined;
  }

  /** Appends bytes and returns every message now complete. Throws a GatewayError on oversize. */
  push(chunk: Uint8Array): Buffer[] {
    if (chunk.length === 0) return [];
    this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered === 0 || this.heldType !== undefined) break;
      if (this.acceptsType) {
        const code = (this.chunks[0] as Buffer)[0] as number;
        if (!this.acceptsType(code)) throw errors.protocolViolation(`invalid frontend message type ${code}`);
      }
      if (this.buffered < 5) break;
      const head = this.peek(5);
      const length = head.readInt32BE(1); // signed, as Postgres reads it: a negative one is invalid
      if (length < 4) throw errors.protocolViolation('invalid message length');
      const max = this.maxMessageSize();
      if (length + 1 > max) throw errors.messageTooLarge(max);
      if (this.buffered < length + 1) break;
      out.push(this.take(length + 1));
    }
    return out;
  }

  /** Takes the bytes of a message not yet complete, leaving the framer empty (a hand-over). */
  takeBuffered(): Buffer {
    const rest = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) return first;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const joined = this.peek(n);
    // Copy so the message does not pin a possibly large socket chunk in memory.
    const message = Buffer.from(joined.subarray(0, n));
    const rest = joined.subarray(n);
    this.chunks[0] = rest;
    if (rest.length === 0) this.chunks.shift();
    this.buffered -= n;
    return message;
  }
}
