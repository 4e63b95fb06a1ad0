import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { Channel, REPLY_BYTES, Slot } from './channel.js';
import { DurableFs, WalSlot } from './durable-fs.js';
import { MemoryMeter } from './memory-meter.js';
import {
  type AccessMode,
  openParked,
  type ParkedPglite,
  type PgliteArtifacts,
  parkPglite,
} from './pglite-open.js';
import { ResponseBatcher, requestShape } from './response-batcher.js';
import { SizeQuota } from './size-quota.js';

/**
 * Worker thread hosting one database's PGlite at a time, so a long statement in one database
 * never blocks the gateway's event loop or another database, and busy databases use several
 * cores. It prepares a PGlite ahead of time and waits (parked) for a database to open; after a
 * clean close it may park again and serve another. Requests and responses cross as transferred
 * ArrayBuffers (no copy). A large result streams out in batches while its statement runs; when the
 * client reads slower than Postgres writes, the worker blocks (as a Postgres backend blocks on a
 * full socket) until the gateway has passed enough of it on.
 */

export interface WorkerInit {
  artifacts: PgliteArtifacts;
  /** Postgres `-c` settings. */
  settings: string[];
  /** Largest WASM heap a database may grow to (heap-limit.ts); 0 = PGlite's 2 GiB. */
  maxHeapBytes: number;
  /** MAX_DATABASE_SIZE: bytes of base/ past which files may not grow (size-quota.ts); 0 = none. */
  maxDataBytes: number;
  /** One Int32: bytes of output posted and not yet passed on to the client (see OUTPUT_WINDOW). */
  unacked: SharedArrayBuffer;
  /** FSYNC=on: WAL flushed before every reply, data files before checkpoints move on (durable-fs.ts). */
  fsync: boolean;
  /** DURABILITY_COUNTERS Int32s, shared by all workers of the host. */
  durability: SharedArrayBuffer;
  /** Shared by every worker of the process: how many are watching their doorbell now. */
  spinners: SharedArrayBuffer;
  /** WalSlot BigInt64s: how far this worker's database's WAL was written (an LSN) and how many WAL writes were made (for WAL shipping), and the WAL gate (see engine.ts). */
  walEnd: SharedArrayBuffer;
  /** The request and reply slots of the fast path (channel.ts). */
  channel: SharedArrayBuffer;
  /** The memory this worker's database holds, as the worker last measured it (memory-meter.ts). */
  memory: SharedArrayBuffer;
}

/** Output bytes in a batch before it is posted while the statement still runs. */
const BATCH_BYTES = 256 * 1024;
/** Output bytes the gateway may hold unacknowledged before the worker waits for the client. */
const OUTPUT_WINDOW = 4 * 1024 * 1024;

export type WorkerRequest =
  | { type: 'open'; dataDir: string; readOnly: boolean; access?: AccessMode }
  | { type: 'exec'; id: number; data: ArrayBuffer }
  /** `park`: prepare the next PGlite after closing (the worker is kept for reuse). */
  | { type: 'close'; id: number; park: boolean };

export type WorkerReply =
  | { type: 'parked' }
  | { type: 'opened'; baselineSql: string; parameters: Record<string, string>; clearedSettings: string[] }
  | { type: 'open-failed'; message: string }
  /** Part of a running request's output: whole messages, `length` bytes at the start of `data`. */
  | { type: 'chunk'; id: number; data: ArrayBuffer; length: number }
  /** The rest of the output; it holds the last message the request produced. */
  | { type: 'result'; id: number; data: ArrayBuffer; length: number }
  | { type: 'failed'; id: number; message: string }
  /** The engine's session broke (a FATAL): the output before it, and why. */
  | { type: 'broken'; id: number; message: string; data: ArrayBuffer; length: number }
  | { type: 'closed'; id: number };

const port = parentPort;
if (!port) throw new Error('engine-worker must run in a worker thread');
const init = workerData as WorkerInit;

function reply(message: WorkerReply, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer);
}

const messageText = (err: unknown) => String((err as Error)?.message ?? err);

/**
 * An idle worker never allocates, so V8 never collects what opening left behind (~10-30 MB per
 * database). Collect once after an open and once whenever a busy spell ends.
 */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const IDLE_GC_MS = 2_000;
/** When the worker last did something; 0 once collected since (no timer per request). */
let busyAt = 0;
function collectWhenIdle(): void {
  busyAt = performance.now();
}
/** Called while idle (between sleeps on the doorbell). */
function collectIfIdleLongEnough(): void {
  if (busyAt === 0 || performance.now() - busyAt < IDLE_GC_MS) return;
  busyAt = 0;
  gc();
}

async function park(): Promise<ParkedPglite | Error> {
  try {
    return await parkPglite(
      init.artifacts,
      init.settings,
      (mod) => {
        durable.install(mod);
        // After durable-fs: its check runs before durable-fs records a write.
        quota.install(mod);
        memory.install(mod);
      },
      init.maxHeapBytes,
    );
  } catch (err) {
    return err instanceof Error ? err : new Error(messageText(err));
  }
}

const unacked = new Int32Array(init.unacked);
const walEnd = new BigInt64Array(init.walEnd);
const durable = new DurableFs({
  fsync: init.fsync,
  counters: new Int32Array(init.durability),
  onWalWrite: (lsn) => {
    if (lsn > Atomics.load(walEnd, WalSlot.End)) Atomics.store(walEnd, WalSlot.End, lsn);
    // Counted too: a commit may rewrite the last page without moving the end.
    Atomics.add(walEnd, WalSlot.Writes, 1n);
  },
  beforeWalWrite: passWalGate,
});
const quota = new SizeQuota(init.maxDataBytes);

/**
 * The WAL gate: a write is counted as begun before the gate is looked at, so the gateway, which
 * closes the gate before it reads the count, either sees this write or holds it (engine.ts,
 * holdWal). Held, the write waits (bounded waits: a terminate takes effect between them).
 */
function passWalGate(): void {
  Atomics.add(walEnd, WalSlot.WritesBegun, 1n);
  while (Atomics.load(walEnd, WalSlot.Gate) !== 0n) Atomics.wait(walEnd, WalSlot.Gate, 1n, 50);
}
const memory = new MemoryMeter(init.memory);
const batcher = new ResponseBatcher(BATCH_BYTES);
const channel = new Channel(init.channel);

/** Blocks the (synchronously running) statement while the client is behind. */
function waitForClient(): void {
  for (let n = Atomics.load(unacked, 0); n > OUTPUT_WINDOW; n = Atomics.load(unacked, 0)) {
    // Bounded waits: a terminate (cancel, timeout) takes effect between them at the latest.
    Atomics.wait(unacked, 0, n, 100);
  }
}

/**
 * How one request is answered. `fromSlot`: it came through the channel, and so does its reply
 * when it fits and no part of it was posted before (the parts' order must hold); otherwise the
 * reply is posted and the channel says so once, before the message leaves: the gateway sends its
 * next request only after the message, so the slot's reply count never runs behind.
 */
class Answer {
  private told = false;

  constructor(
    readonly id: number,
    private readonly fromSlot: boolean,
  ) {}

  post(message: WorkerReply, transfer: ArrayBuffer[] = []): void {
    if (this.fromSlot && !this.told) channel.sendReply(this.id, undefined);
    this.told = true;
    reply(message, transfer);
  }

  /** The whole reply through the slot, when that is allowed. */
  inline(bytes: () => Uint8Array, length: number, partsPosted: boolean): boolean {
    if (!this.fromSlot || this.told || partsPosted || length > REPLY_BYTES) return false;
    this.told = true;
    channel.sendReply(this.id, bytes());
    return true;
  }
}

/**
 * An error came in an extended unit whose Sync has not been sent yet: the engine skips what
 * follows until the Sync, so Binds sent meanwhile are rightly answered with nothing.
 */
let skippingToSync = false;

async function exec(pg: ParkedPglite['pg'], answer: Answer, data: Uint8Array): Promise<void> {
  const id = answer.id;
  Atomics.store(unacked, 0, 0);
  let posted = false;
  const post = (batch: ArrayBuffer, length: number) => {
    posted = true;
    // A commit's CommandComplete may be in any part: its WAL is durable before any part leaves.
    durable.flushWal();
    reply({ type: 'chunk', id, data: batch, length }, [batch]);
    if (Atomics.add(unacked, 0, length) + length > OUTPUT_WINDOW) waitForClient();
  };
  let broken = false;
  const onRawData = (bytes: Uint8Array) => {
    if (broken) return;
    batcher.append(bytes, post);
    const fatal = batcher.fatal;
    if (fatal === undefined) return;
    // The session is lost; PGlite may go on repeating the error. Say so now: the gateway ends
    // this worker and opens the database again.
    broken = true;
    // What came before the cut may acknowledge a commit: its WAL is made durable first.
    durable.flushWal();
    const rest = batcher.finish();
    answer.post({ type: 'broken', id, message: fatal, ...rest }, [rest.data]);
  };
  const shape = requestShape(data);
  const wasSkipping = skippingToSync;
  const binds = wasSkipping ? 0 : shape.binds;
  skippingToSync = false; // a broken request restarts the engine, which then skips nothing
  await pg.execProtocolRawStream(data, { onRawData });
  if (broken) return;
  durable.flushWal();
  skippingToSync = !shape.endsUnit && (wasSkipping || batcher.sawError);
  if (batcher.unansweredBinds(binds)) {
    // Its reply is not to be believed (an EmptyQueryResponse where an INSERT should have run).
    batcher.finish();
    answer.post({
      type: 'broken',
      id,
      message: 'engine state corrupted: a Bind was neither completed nor refused',
      data: new ArrayBuffer(0),
      length: 0,
    });
    return;
  }
  if (answer.inline(() => batcher.take(), batcher.pending, posted)) return;
  const rest = batcher.finish();
  answer.post({ type: 'result', id, ...rest }, [rest.data]);
}

/** Runs a request; a failure breaks the session (the gateway restarts the database). */
async function run(pg: ParkedPglite['pg'], id: number, data: Uint8Array, fromSlot: boolean): Promise<void> {
  const answer = new Answer(id, fromSlot);
  try {
    await exec(pg, answer, data);
  } catch (err) {
    batcher.finish(); // drops what the failed request left, so the next starts empty
    answer.post({ type: 'broken', id, message: messageText(err), data: new ArrayBuffer(0), length: 0 });
  }
  collectWhenIdle();
  memory.maybeMeasure();
}

let parked = await park();
reply({ type: 'parked' });
let open: ParkedPglite | undefined;
/** Set when the worker is done (its database closed without parking again, or did not open). */
let stopped = false;

async function handle(request: WorkerRequest): Promise<void> {
  if (request.type === 'open') {
    try {
      if (parked instanceof Error) throw parked;
      open = parked;
      const opened = await openParked(parked, request.dataDir, request.access ?? request.readOnly);
      // WAL positions are reported from here on, with the database's own segment size; the
      // shared memory is part of what the database holds (memory-meter.ts).
      const [sizes] = (
        await parked.pg.query<{ segment: string; shared: string }>(
          `SELECT (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size') AS segment,
             (SELECT setting::int8 * 1048576 FROM pg_catalog.pg_settings
              WHERE name = 'shared_memory_size' AND unit = 'MB') AS shared`,
        )
      ).rows;
      durable.setSegmentSize(Number(sizes?.segment ?? 0));
      memory.opened(Number(sizes?.shared ?? 0));
      reply({ type: 'opened', ...opened });
      // After recovery, which must never be refused; the walk (~10 ms) delays the first request.
      quota.opened(request.dataDir);
      collectWhenIdle();
    } catch (err) {
      reply({ type: 'open-failed', message: messageText(err) });
      stopped = true;
    }
  } else if (request.type === 'close') {
    quota.closed();
    await open?.pg.close().catch(() => undefined);
    durable.syncAll();
    durable.setSegmentSize(0);
    Atomics.store(walEnd, WalSlot.End, 0n);
    memory.closed();
    open = undefined;
    reply({ type: 'closed', id: request.id });
    if (!request.park) {
      stopped = true;
      return;
    }
    gc();
    parked = await park();
    reply({ type: 'parked' });
  } else if (open) {
    await run(open.pg, request.id, new Uint8Array(request.data), false);
  }
}

/** How long an idle worker sleeps on the doorbell before it turns its event loop (timers). */
const IDLE_SLICE_MS = 200;
/**
 * After it answered a request, the worker watches the doorbell this long before it sleeps: a
 * client's next statement often comes within it, and waking a sleeping thread costs tens of µs
 * on a VM (the vCPU may have halted). Bounded, only right after a request (an idle database
 * burns nothing), and one worker of the process at a time (MAX_SPINNERS), so many busy
 * databases do not spin the cores away from each other and from the gateway's thread.
 */
const SPIN_AFTER_REQUEST_MS = 0.1;
const MAX_SPINNERS = 1;
const spinners = new Int32Array(init.spinners);

/** Busy-waits until `slot` differs from `value` or `ms` passed; true when it changed. */
function spinWhile(slots: Int32Array, slot: number, value: number, ms: number): boolean {
  if (Atomics.add(spinners, 0, 1) >= MAX_SPINNERS) {
    Atomics.sub(spinners, 0, 1);
    return false;
  }
  try {
    const until = performance.now() + ms;
    while (Atomics.load(slots, slot) === value) if (performance.now() >= until) return false;
    return true;
  } finally {
    Atomics.sub(spinners, 0, 1);
  }
}
let justServed = false;
const inbox: WorkerRequest[] = [];
let received = 0;
let arrived: (() => void) | undefined;
const onMessage = (request: WorkerRequest) => {
  received++;
  inbox.push(request);
  arrived?.();
};
port.on('message', onMessage);
const turnEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Resolves when a message arrives (a posted one is on its way). */
const nextMessage = () =>
  new Promise<void>((resolve) => {
    arrived = () => {
      arrived = undefined;
      resolve();
    };
  });

// Requests come in order: posted ones (the gateway rings the doorbell after each) and the one in
// the slot (the gateway sends one request at a time). Sleeping in Atomics.wait instead of the
// event loop is what makes the slot fast; every message posted rings, so none waits for a slice.
while (!stopped) {
  // Read before looking for work: a ring after this wakes the wait below at once.
  const rung = Atomics.load(channel.slots, Slot.Doorbell);
  const request = inbox.shift();
  if (request) {
    await handle(request);
    continue;
  }
  const fast = channel.takeRequest();
  if (fast) {
    justServed = true;
    if (open) await run(open.pg, fast.id, fast.data, true);
    else {
      new Answer(fast.id, true).post({ type: 'failed', id: fast.id, message: 'no database is open' });
    }
    continue;
  }
  if (channel.posted !== received) {
    await nextMessage();
    continue;
  }
  const rangMeanwhile = justServed && spinWhile(channel.slots, Slot.Doorbell, rung, SPIN_AFTER_REQUEST_MS);
  justServed = false;
  if (!rangMeanwhile && Atomics.wait(channel.slots, Slot.Doorbell, rung, IDLE_SLICE_MS) === 'timed-out') {
    collectIfIdleLongEnough();
    if (open) memory.maybeMeasure();
  }
  // A request in the slot is served at once; anything else (a posted message, a timer) needs
  // the event loop.
  if (Atomics.load(channel.slots, Slot.RequestReady) !== 1) await turnEventLoop();
}
port.off('message', onMessage);
