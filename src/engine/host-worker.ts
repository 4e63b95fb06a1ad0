import type { Worker } from 'node:worker_threads';
import { Channel, newChannelBuffer } from './channel.js';
import { WAL_SLOTS_BYTES } from './durable-fs.js';
import type { WorkerReply, WorkerRequest } from './engine-worker.js';
import { newMemoryBuffer } from './memory-meter.js';

/** Where a worker goes when its database closes (the EngineHost). */
export interface WorkerPool {
  /** Whether the worker should park again for reuse. */
  wantsBack(host: HostWorker): boolean;
  /** Takes back a worker that was told to park again. */
  takeBack(host: HostWorker): void;
}

/**
 * A worker thread, how many databases it has served, and whether it is parked. Its own listener
 * notes every `parked` reply, so one that arrives before anyone waits for it is not lost.
 */
export class HostWorker {
  uses = 0;
  private parked = false;
  private gone: Error | undefined;
  private waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;

  /** Output bytes the worker posted that the client has not taken in (shared with the worker). */
  readonly unacked: Int32Array;

  /** How far the worker's database's WAL was written (shared with the worker). */
  readonly walEnd: BigInt64Array;

  /** The request and reply slots shared with the worker (channel.ts). */
  readonly channel: Channel;

  /** The memory its database holds, as the worker measured it (memory-meter.ts). */
  readonly memory: BigInt64Array;

  constructor(
    readonly worker: Worker,
    unacked: SharedArrayBuffer,
    walEnd: SharedArrayBuffer = new SharedArrayBuffer(WAL_SLOTS_BYTES),
    channel: SharedArrayBuffer = newChannelBuffer(),
    memory: SharedArrayBuffer = newMemoryBuffer(),
  ) {
    this.unacked = new Int32Array(unacked);
    this.walEnd = new BigInt64Array(walEnd);
    this.channel = new Channel(channel);
    this.memory = new BigInt64Array(memory);
    worker.on('message', (reply: WorkerReply) => {
      if (reply.type !== 'parked') return;
      this.parked = true;
      this.waiter?.resolve();
      this.waiter = undefined;
    });
    worker.on('error', (err) => this.end(err));
    worker.on('exit', (code) => this.end(new Error(`database worker exited with code ${code}`)));
  }

  /** Resolves once the worker is parked (at once if it already is); rejects if it ends first. */
  whenParked(): Promise<void> {
    if (this.parked) return Promise.resolve();
    if (this.gone) return Promise.reject(this.gone);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** Posts a message; the doorbell wakes the worker if it sleeps on the channel. */
  post(message: WorkerRequest, transfer: ArrayBuffer[] = []): void {
    this.channel.countPost();
    this.worker.postMessage(message, transfer);
    this.channel.ring();
  }

  /** Its parked PGlite is about to open a database. */
  unpark(): void {
    this.parked = false;
  }

  private end(err: Error): void {
    this.gone ??= err;
    this.waiter?.reject(err);
    this.waiter = undefined;
  }
}
