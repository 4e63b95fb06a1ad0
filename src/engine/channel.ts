/**
 * The fast path between the gateway and a database worker: one request and one reply slot in a
 * SharedArrayBuffer, with Atomics for the wake-ups. A postMessage round trip costs two event-loop
 * wake-ups (~60 µs on a busy 2-core machine) on top of a statement that often takes less; here the
 * idle worker sleeps in Atomics.wait on a doorbell (woken by a futex, not its event loop), and the
 * gateway, when nothing else is in flight, waits for the reply the same way for a bounded moment
 * before falling back to Atomics.waitAsync.
 *
 * Requests that do not fit the slot, replies that do not fit or were streamed in parts, and every
 * other message (open, close, failures) keep going through postMessage; the doorbell tells a
 * sleeping worker to turn its event loop to receive them.
 */

/** Int32 slots at the start of the buffer. */
export const Slot = {
  /** Bumped by the gateway for each request and each postMessage it sends to the worker. */
  Doorbell: 0,
  /** 1 while a request sits in the request area. */
  RequestReady: 1,
  RequestLength: 2,
  RequestId: 3,
  /** Bumped by the worker when it finished a request from the slot. */
  ReplySeq: 4,
  /** How that reply travels (ReplyKind). */
  ReplyKind: 5,
  ReplyLength: 6,
  ReplyId: 7,
  /** Messages the gateway posted to the worker (it counts those it received). */
  Posted: 8,
} as const;

export const ReplyKind = {
  /** The reply is in the reply area. */
  Inline: 1,
  /** The reply was (or will be) posted as a message: its order after streamed parts is kept. */
  Posted: 2,
} as const;

const HEADER_BYTES = 64;
/** Requests up to this size go through the slot (larger ones are transferred). */
export const REQUEST_BYTES = 32 * 1024;
/** Replies up to this size come back through the slot. */
export const REPLY_BYTES = 64 * 1024;
const REQUEST_OFFSET = HEADER_BYTES;
const REPLY_OFFSET = HEADER_BYTES + REQUEST_BYTES;

export function newChannelBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + REQUEST_BYTES + REPLY_BYTES);
}

export class Channel {
  readonly slots: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.slots = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.bytes = new Uint8Array(buffer);
  }

  /** Wakes a worker sleeping on the doorbell (a request, or a message to receive). */
  ring(): void {
    Atomics.add(this.slots, Slot.Doorbell, 1);
    Atomics.notify(this.slots, Slot.Doorbell);
  }

  /**
   * Gateway: counts a message about to be posted. A worker that rang awake turns its event loop
   * until it has received as many: one turn does not always deliver a message just posted.
   */
  countPost(): void {
    Atomics.add(this.slots, Slot.Posted, 1);
  }

  get posted(): number {
    return Atomics.load(this.slots, Slot.Posted);
  }

  /** Gateway: places a request (at most REQUEST_BYTES) and rings. The slot must be free. */
  sendRequest(id: number, data: Uint8Array): void {
    this.bytes.set(data, REQUEST_OFFSET);
    Atomics.store(this.slots, Slot.RequestLength, data.length);
    Atomics.store(this.slots, Slot.RequestId, id);
    Atomics.store(this.slots, Slot.RequestReady, 1);
    this.ring();
  }

  /** Worker: the waiting request, copied out (PGlite may keep using it after the slot is reused). */
  takeRequest(): { id: number; data: Uint8Array } | undefined {
    if (Atomics.load(this.slots, Slot.RequestReady) !== 1) return undefined;
    const length = Atomics.load(this.slots, Slot.RequestLength);
    const id = Atomics.load(this.slots, Slot.RequestId);
    const data = this.bytes.slice(REQUEST_OFFSET, REQUEST_OFFSET + length);
    Atomics.store(this.slots, Slot.RequestReady, 0);
    return { id, data };
  }

  /** Worker: answers the request from the slot; `data` undefined means it was posted instead. */
  sendReply(id: number, data: Uint8Array | undefined): void {
    if (data) this.bytes.set(data, REPLY_OFFSET);
    Atomics.store(this.slots, Slot.ReplyKind, data ? ReplyKind.Inline : ReplyKind.Posted);
    Atomics.store(this.slots, Slot.ReplyLength, data?.length ?? 0);
    Atomics.store(this.slots, Slot.ReplyId, id);
    Atomics.add(this.slots, Slot.ReplySeq, 1);
    Atomics.notify(this.slots, Slot.ReplySeq);
  }

  get replySeq(): number {
    return Atomics.load(this.slots, Slot.ReplySeq);
  }

  /** Gateway: the reply that arrived after `seq`: its bytes (copied out), or 'posted'. */
  takeReply(): { id: number; data: Uint8Array | 'posted' } {
    const id = Atomics.load(this.slots, Slot.ReplyId);
    if (Atomics.load(this.slots, Slot.ReplyKind) !== ReplyKind.Inline) return { id, data: 'posted' };
    const length = Atomics.load(this.slots, Slot.ReplyLength);
    const data = Buffer.allocUnsafe(length);
    data.set(this.bytes.subarray(REPLY_OFFSET, REPLY_OFFSET + length));
    return { id, data };
  }
}
