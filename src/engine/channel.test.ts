import { describe, expect, it } from 'vitest';
import { Channel, newChannelBuffer, REPLY_BYTES, REQUEST_BYTES, Slot } from './channel.js';

/** Both ends of the channel in one thread: what the gateway writes, the worker reads, and back. */
describe('Channel', () => {
  it('carries a request and an inline reply, and counts replies', () => {
    const buffer = newChannelBuffer();
    const gateway = new Channel(buffer);
    const worker = new Channel(buffer);
    expect(worker.takeRequest()).toBeUndefined();
    const bell = Atomics.load(gateway.slots, Slot.Doorbell);
    gateway.sendRequest(7, Buffer.from('Q\0\0\0\rselect 1\0'));
    expect(Atomics.load(gateway.slots, Slot.Doorbell)).toBe(bell + 1);
    const request = worker.takeRequest();
    expect(request?.id).toBe(7);
    expect(Buffer.from(request?.data ?? []).toString('latin1')).toBe('Q\0\0\0\rselect 1\0');
    // Taken once: the slot is free for the next request.
    expect(worker.takeRequest()).toBeUndefined();
    const seq = gateway.replySeq;
    worker.sendReply(7, Buffer.from('Z\0\0\0\x05I'));
    expect(gateway.replySeq).toBe(seq + 1);
    const reply = gateway.takeReply();
    expect(reply.id).toBe(7);
    expect(Buffer.from(reply.data as Uint8Array).toString('latin1')).toBe('Z\0\0\0\x05I');
  });

  it('says when a reply was posted instead', () => {
    const buffer = newChannelBuffer();
    const gateway = new Channel(buffer);
    new Channel(buffer).sendReply(3, undefined);
    expect(gateway.takeReply()).toEqual({ id: 3, data: 'posted' });
  });

  it('copies requests and replies out, so the slot can be reused at once', () => {
    const buffer = newChannelBuffer();
    const gateway = new Channel(buffer);
    const worker = new Channel(buffer);
    gateway.sendRequest(1, new Uint8Array(REQUEST_BYTES).fill(1));
    const first = worker.takeRequest();
    gateway.sendRequest(2, new Uint8Array(10).fill(2));
    expect(first?.data.every((b) => b === 1)).toBe(true);
    expect(first?.data.length).toBe(REQUEST_BYTES);
    worker.sendReply(1, new Uint8Array(REPLY_BYTES).fill(3));
    const reply = gateway.takeReply().data as Uint8Array;
    worker.sendReply(2, new Uint8Array(4).fill(4));
    expect(reply.length).toBe(REPLY_BYTES);
    expect(reply.every((b) => b === 3)).toBe(true);
  });

  it('counts posted messages for the worker to wait for', () => {
    const gateway = new Channel(newChannelBuffer());
    gateway.countPost();
    gateway.countPost();
    expect(gateway.posted).toBe(2);
  });
});
