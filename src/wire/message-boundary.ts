/**
 * Follows a stream of tagged protocol messages (1-byte code + int32 length) without keeping them:
 * it only knows whether the bytes seen so far end exactly between two messages. A relay that may
 * have to speak to the client itself (an ErrorResponse of its own) may do so only there, or the
 * client would read it as part of a half-sent message. Costs a header read per message, nothing
 * per byte of body. TCP may split anywhere, the 5-byte header included.
 */
export class MessageBoundary {
  /** Bytes of the current message's body still to come. */
  private bodyLeft = 0;
  /** How many of the next header's 5 bytes were seen, and its length bytes so far. */
  private headerSeen = 0;
  private length = 0;
  /** A length below 4: the stream is not protocol, so it has no boundaries left. */
  private broken = false;

  /** True when the bytes fed so far end exactly at the end of a message. */
  get atBoundary(): boolean {
    return !this.broken && this.bodyLeft === 0 && this.headerSeen === 0;
  }

  feed(chunk: Uint8Array): void {
    let i = 0;
    const n = chunk.length;
    while (i < n && !this.broken) {
      if (this.bodyLeft > 0) {
        const take = Math.min(this.bodyLeft, n - i);
        this.bodyLeft -= take;
        i += take;
        continue;
      }
      // Header: the type byte, then the big-endian length, which counts itself.
      if (this.headerSeen > 0) this.length = this.length * 256 + (chunk[i] as number);
      this.headerSeen++;
      i++;
      if (this.headerSeen === 5) {
        this.headerSeen = 0;
        if (this.length < 4 || this.length > 0x7fffffff) this.broken = true;
        this.bodyLeft = this.length - 4;
        this.length = 0;
      }
    }
  }
}
