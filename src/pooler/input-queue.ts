/** A client's framed messages waiting for their turn, and how many bytes they hold. */
export class InputQueue {
  private readonly queue: Buffer[] = [];
  private queued = 0;

  get length(): number {
    return this.queue.length;
  }

  /** Bytes waiting: the connection stops reading from the client above a limit. */
  get bytes(): number {
    return this.queued;
  }

  get messages(): readonly Buffer[] {
    return this.queue;
  }

  push(messages: Buffer[]): void {
    for (const m of messages) {
      this.queue.push(m);
      this.queued += m.length;
    }
  }

  shift(): Buffer | undefined {
    const message = this.queue.shift();
    if (message) this.queued -= message.length;
    return message;
  }

  /** Returns a message taken too early to the front. */
  putBack(message: Buffer): void {
    this.queue.unshift(message);
    this.queued += message.length;
  }

  /** Removes and returns the first `count` messages. */
  take(count: number): Buffer[] {
    const taken = this.queue.splice(0, count);
    for (const m of taken) this.queued -= m.length;
    return taken;
  }

  clear(): void {
    this.queue.length = 0;
    this.queued = 0;
  }
}
