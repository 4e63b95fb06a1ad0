import { Frontend, message } from '../wire/protocol.js';

/**
 * COPY FROM STDIN data collected from a client. PGlite must receive the statement, all of its
 * CopyData and the CopyDone/CopyFail in one call, so the data is buffered (bounded) until the end.
 */
export class CopyIn {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  /** A CancelRequest came while the data was still arriving: the COPY fails with 57014. */
  cancelled = false;

  constructor(
    private readonly statement: Buffer,
    private readonly maxBytes: number,
  ) {}

  static fail(reason: string): Buffer {
    return message(Frontend.CopyFail, `${reason}\0`);
  }

  /**
   * Takes the next client message. 'more' while the COPY goes on; otherwise the messages to run
   * (statement + data + end), and whether the message was not part of the COPY (to requeue).
   */
  accept(message: Buffer): 'more' | { messages: Buffer } | { unexpected: number } {
    switch (message[0]) {
      case Frontend.CopyData:
        this.chunks.push(message);
        this.bytes += message.length;
        if (this.bytes <= this.maxBytes) return 'more';
        return this.abort(`COPY data exceeds the gateway limit of ${this.maxBytes} bytes`);
      case Frontend.CopyDone:
        return { messages: Buffer.concat([this.statement, ...this.chunks, message]) };
      case Frontend.CopyFail:
        return { messages: Buffer.concat([this.statement, message]) };
      case Frontend.Flush:
      case Frontend.Sync:
        // Postgres ignores these during COPY; so do we.
        return 'more';
      default:
        // Postgres fails the COPY with 08P01 and drops the message (the session says how).
        return { unexpected: message[0] as number };
    }
  }

  /** The statement and a CopyFail: PGlite ends the COPY with an error for `reason`. */
  abort(reason: string): { messages: Buffer } {
    this.chunks.length = 0;
    return { messages: Buffer.concat([this.statement, CopyIn.fail(reason)]) };
  }
}
