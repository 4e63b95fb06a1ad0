import { REQUEST_BYTES, Slot } from './channel.js';
import { WalSlot } from './durable-fs.js';
import type { WorkerReply, WorkerRequest } from './engine-worker.js';
import type { HostWorker, WorkerPool } from './host-worker.js';
import { readMemory } from './memory-meter.js';

export { postgresSettings, READ_ONLY_ROLE, REPORTED_PARAMETERS } from './pglite-open.js';

/**
 * One open database: the single Postgres session behind it, spoken to in raw protocol bytes.
 * Each engine is a PGlite in its own worker thread (started by EngineHost, engine-host.ts).
 */
export interface Engine {
  /**
   * Executes raw frontend messages and returns the raw backend response. With `onChunk`, a large
   * response is passed on in parts (whole messages) while the statement runs, and only the rest,
   * which holds the last message, is returned; the statement waits while the promises `onChunk`
   * returns (the client is behind) hold more than a few MB. Without it, the parts are joined.
   */
  exec(messages: Uint8Array, onChunk?: OnChunk): Promise<Uint8Array>;
  /** SQL that restores the session's baseline identity after it was reset; empty when none. */
  readonly baselineSql: string;
  /** Values of the parameters a real server reports in ParameterStatus at startup. */
  readonly parameters: Readonly<Record<string, string>>;
  /** How far the database's WAL was written: an LSN, 0 before its first WAL write. */
  walEnd(): bigint;
  /** How many WAL writes the worker made (grows when a commit rewrites the last page too). */
  walWrites(): bigint;
  /**
   * Closes the WAL gate: the worker's next WAL write waits until `releaseWal` (or the worker's
   * end). Returns how many WAL writes the worker has begun: if that did not grow since a request
   * started, the request has written no WAL and, held, cannot write any (no commit can happen).
   */
  holdWal(): bigint;
  releaseWal(): void;
  /** How many WAL writes the worker has begun (see holdWal). */
  walWritesBegun(): bigint;
  /**
   * The memory the database holds, as its worker last measured it (at most a second old while it
   * works): Postgres' shared memory and memory contexts plus the worker's JS heap; null when not
   * measured (memory-meter.ts).
   */
  memoryBytes(): number | null;
  /** Stops a running statement by ending the worker; the engine is dead afterwards. */
  kill(): Promise<void>;
  close(): Promise<void>;
}

/** Takes part of a response; a returned promise settles once the client has taken it in. */
export type OnChunk = (chunk: Uint8Array) => Promise<void> | undefined;

/** The engine was killed (cancel, statement timeout) while a request was running. */
export class EngineKilledError extends Error {}

/**
 * The engine's answer shows its session is lost: a FATAL, an empty or malformed reply, or one
 * without the ReadyForQuery its request must end with. The database must be restarted.
 * `partial` is the output that came before the break (whole messages).
 */
export class EngineBrokenError extends Error {
  constructor(
    message: string,
    readonly partial: Uint8Array = new Uint8Array(),
  ) {
    super(message);
  }
}

/** Why a complete reply to `request` cannot be right, or undefined when it is well formed. */
export function replyProblem(request: Uint8Array, reply: Uint8Array): string | undefined {
  const expectsReady = endsUnit(request);
  if (reply.length === 0) return expectsReady ? 'the engine returned an empty reply' : undefined;
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  let i = 0;
  let last = -1;
  while (i < reply.length) {
    if (i + 5 > reply.length) return 'the engine returned a truncated message';
    const length = view.getUint32(i + 1);
    if (length < 4 || i + 1 + length > reply.length) return 'the engine returned a malformed message';
    last = reply[i] as number;
    i += 1 + length;
  }
  if (expectsReady && last !== 0x5a) return 'the engine reply lacks its ReadyForQuery';
  return undefined;
}

/** Whether the last message of a request is a Query or a Sync (its reply ends with ReadyForQuery). */
function endsUnit(request: Uint8Array): boolean {
  const view = new DataView(request.buffer, request.byteOffset, request.byteLength);
  let i = 0;
  let last = -1;
  while (i + 5 <= request.length) {
    last = request[i] as number;
    i += 1 + view.getUint32(i + 1);
  }
  return last === 0x51 || last === 0x53;
}

interface Pending {
  resolve: (d: Uint8Array) => void;
  reject: (e: Error) => void;
  onChunk?: OnChunk;
  /** The request's messages, to check the reply against (exec only). */
  request?: Uint8Array;
  /** Parts received for a request without `onChunk`. */
  parts?: Uint8Array[];
}

/** Slot requests in flight in this process, over all engines. */
let inFlight = 0;
/**
 * How long the event loop may block waiting for a reply, when nothing else is in flight and the
 * database's last request took less: a quick statement's reply then arrives through a futex
 * wake-up (a few µs) instead of an event-loop turn (tens of µs). Others wait asynchronously.
 */
const BLOCK_MS = 0.5;
/** The first part of BLOCK_MS is spent watching the reply count rather than sleeping. */
const SPIN_MS = 0.1;

/** Node 20 has Atomics.waitAsync; TypeScript's ES2023 lib does not declare it. */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<unknown> | string };
  }
).waitAsync;

export class WorkerEngine implements Engine {
  private nextId = 1;
  /** A request is with the worker; the others wait their turn (the worker runs one at a time). */
  private busy = false;
  private readonly turns: (() => void)[] = [];
  /** How long the last slot request took (ms), to decide whether to block for the next. */
  private lastMs = 0;
  private readonly pending = new Map<number, Pending>();
  private dead: Error | undefined;
  private readonly onMessage = (reply: WorkerReply) => this.onReply(reply);
  private readonly onError = (err: Error) => this.fail(err);
  private readonly onExit = () => this.fail(new EngineKilledError('database engine stopped'));

  constructor(
    private readonly host: HostWorker,
    private readonly pool: WorkerPool,
    readonly baselineSql: string,
    readonly parameters: Record<string, string>,
    /** Small requests go through the channel's slot (false: everything is posted; benchmarks). */
    private readonly inlineRequests = true,
  ) {
    host.worker.on('message', this.onMessage);
    host.worker.on('error', this.onError);
    host.worker.on('exit', this.onExit);
  }

  private onReply(reply: WorkerReply): void {
    if (reply.type === 'chunk') {
      this.onChunk(reply.id, new Uint8Array(reply.data, 0, reply.length));
      return;
    }
    if (
      reply.type !== 'result' &&
      reply.type !== 'broken' &&
      reply.type !== 'failed' &&
      reply.type !== 'closed'
    )
      return;
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (reply.type === 'result') {
      this.settle(waiter, new Uint8Array(reply.data, 0, reply.length));
    } else if (reply.type === 'broken') {
      const rest = new Uint8Array(reply.data, 0, reply.length);
      waiter.reject(
        new EngineBrokenError(reply.message, waiter.parts ? Buffer.concat([...waiter.parts, rest]) : rest),
      );
    } else if (reply.type === 'failed') waiter.reject(new Error(reply.message));
    else waiter.resolve(new Uint8Array());
  }

  private settle(waiter: Pending, rest: Uint8Array): void {
    const whole = waiter.parts ? Buffer.concat([...waiter.parts, rest]) : rest;
    // Streamed parts were cut at whole messages, and the last part always holds the last
    // message (response-batcher.ts): checking it is enough.
    const problem = waiter.request ? replyProblem(waiter.request, waiter.onChunk ? rest : whole) : undefined;
    if (problem) waiter.reject(new EngineBrokenError(problem, whole));
    else waiter.resolve(whole);
  }

  private onChunk(id: number, chunk: Uint8Array): void {
    const waiter = this.pending.get(id);
    const taken = waiter?.onChunk ? waiter.onChunk(chunk) : undefined;
    if (waiter && !waiter.onChunk) {
      waiter.parts ??= [];
      waiter.parts.push(chunk);
    }
    const ack = () => {
      // The worker zeroes the count when a request starts; a late ack only widens its window.
      Atomics.sub(this.host.unacked, 0, chunk.length);
      Atomics.notify(this.host.unacked, 0);
    };
    if (taken) void taken.then(ack, ack);
    else ack();
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const waiter of this.pending.values()) waiter.reject(this.dead);
    this.pending.clear();
    // Wakes a wait for a slot reply that will not come.
    Atomics.notify(this.host.channel.slots, Slot.ReplySeq);
  }

  private detach(): void {
    this.host.worker.off('message', this.onMessage);
    this.host.worker.off('error', this.onError);
    this.host.worker.off('exit', this.onExit);
  }

  /**
   * Sends one request and waits for its reply, after the requests before it: through the slot
   * when `inline` is given, otherwise posted. Either way a posted reply settles it in onReply.
   */
  private async request(
    make: (id: number) => WorkerRequest,
    transfer: ArrayBuffer[] = [],
    onChunk?: OnChunk,
    request?: Uint8Array,
    inline?: Uint8Array,
  ): Promise<Uint8Array> {
    if (this.busy) await new Promise<void>((resolve) => this.turns.push(resolve));
    this.busy = true;
    try {
      if (this.dead) throw this.dead;
      const id = this.nextId++;
      const settled = new Promise<Uint8Array>((resolve, reject) => {
        this.pending.set(id, { resolve, reject, onChunk, request });
      });
      if (inline) this.sendInline(id, inline);
      else this.host.post(make(id), transfer);
      return await settled;
    } finally {
      const next = this.turns.shift();
      if (next) next();
      else this.busy = false;
    }
  }

  private sendInline(id: number, data: Uint8Array): void {
    const channel = this.host.channel;
    const seq = channel.replySeq;
    const started = performance.now();
    channel.sendRequest(id, data);
    inFlight++;
    if (inFlight === 1 && this.lastMs < BLOCK_MS) {
      // Watch the reply count first: a quick statement answers within it, and a thread woken
      // from a futex wait on a VM pays tens of µs more. Then sleep for the rest.
      const until = started + SPIN_MS;
      let rang = false;
      while (!rang && performance.now() < until) rang = Atomics.load(channel.slots, Slot.ReplySeq) !== seq;
      if (!rang) Atomics.wait(channel.slots, Slot.ReplySeq, seq, BLOCK_MS - SPIN_MS);
    }
    if (channel.replySeq !== seq) this.takeInline(id, started);
    else void this.awaitInline(id, seq, started);
  }

  private async awaitInline(id: number, seq: number, started: number): Promise<void> {
    const slots = this.host.channel.slots;
    while (Atomics.load(slots, Slot.ReplySeq) === seq && !this.dead) {
      const wait = waitAsync(slots, Slot.ReplySeq, seq);
      if (wait.async) await wait.value;
    }
    this.takeInline(id, started);
  }

  /**
   * The slot's reply to request `id` arrived (or the engine died): settle it unless it was posted.
   * The slot may already hold the next request's reply when this runs late (a posted reply
   * settled the request meanwhile): that one is left to its own wait.
   */
  private takeInline(id: number, started: number): void {
    inFlight--;
    this.lastMs = performance.now() - started;
    if (this.dead) return;
    const reply = this.host.channel.takeReply();
    const waiter = this.pending.get(id);
    if (reply.id !== id || reply.data === 'posted' || !waiter) return;
    this.pending.delete(id);
    this.settle(waiter, reply.data);
  }

  walEnd(): bigint {
    return Atomics.load(this.host.walEnd, WalSlot.End);
  }

  walWrites(): bigint {
    return Atomics.load(this.host.walEnd, WalSlot.Writes);
  }

  holdWal(): bigint {
    // Closed before the count is read; the worker counts before it looks (engine-worker.ts).
    Atomics.store(this.host.walEnd, WalSlot.Gate, 1n);
    return Atomics.load(this.host.walEnd, WalSlot.WritesBegun);
  }

  releaseWal(): void {
    Atomics.store(this.host.walEnd, WalSlot.Gate, 0n);
    Atomics.notify(this.host.walEnd, WalSlot.Gate);
  }

  walWritesBegun(): bigint {
    return Atomics.load(this.host.walEnd, WalSlot.WritesBegun);
  }

  memoryBytes(): number | null {
    return this.dead ? null : readMemory(this.host.memory);
  }

  exec(messages: Uint8Array, onChunk?: OnChunk): Promise<Uint8Array> {
    if (this.inlineRequests && messages.length <= REQUEST_BYTES) {
      return this.request(
        () => ({ type: 'exec', id: 0, data: new ArrayBuffer(0) }),
        [],
        onChunk,
        messages,
        messages,
      );
    }
    // Copy into a buffer of our own that can be transferred (the input may share a pool slab).
    const data = new Uint8Array(messages).buffer as ArrayBuffer;
    return this.request((id) => ({ type: 'exec', id, data }), [data], onChunk, messages);
  }

  async kill(): Promise<void> {
    this.fail(new EngineKilledError('statement interrupted'));
    this.detach();
    await this.host.worker.terminate();
  }

  async close(): Promise<void> {
    let park = false;
    if (!this.dead) {
      park = this.pool.wantsBack(this.host);
      park = await this.request((id) => ({ type: 'close', id, park })).then(
        () => park,
        () => false,
      );
    }
    this.dead ??= new EngineKilledError('database closed');
    this.detach();
    if (park) this.pool.takeBack(this.host);
    else await this.host.worker.terminate();
  }
}
