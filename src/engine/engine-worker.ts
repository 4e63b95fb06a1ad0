import { on } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { DurableFs } from './durable-fs.js';
import { openParked, type ParkedPglite, type PgliteArtifacts, parkPglite } from './pglite-open.js';
import { ResponseBatcher } from './response-batcher.js';

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
  /** One Int32: bytes of output posted and not yet passed on to the client (see OUTPUT_WINDOW). */
  unacked: SharedArrayBuffer;
  /** FSYNC=on: WAL flushed before every reply, data files before checkpoints move on (durable-fs.ts). */
  fsync: boolean;
  /** DURABILITY_COUNTERS Int32s, shared by all workers of the host. */
  durability: SharedArrayBuffer;
  /** Two BigInt64s: how far this worker's database's WAL was written (an LSN), and how many WAL writes were made; for WAL shipping. */
  walEnd: SharedArrayBuffer;
}

/** Output bytes in a batch before it is posted while the statement still runs. */
const BATCH_BYTES = 256 * 1024;
/** Output bytes the gateway may hold unacknowledged before the worker waits for the client. */
const OUTPUT_WINDOW = 4 * 1024 * 1024;

export type WorkerRequest =
  | { type: 'open'; dataDir: string; readOnly: boolean }
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
let gcTimer: NodeJS.Timeout | undefined;
function collectWhenIdle(): void {
  clearTimeout(gcTimer);
  gcTimer = setTimeout(gc, IDLE_GC_MS);
  gcTimer.unref();
}

async function park(): Promise<ParkedPglite | Error> {
  try {
    return await parkPglite(init.artifacts, init.settings, (mod) => durable.install(mod));
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
    if (lsn > Atomics.load(walEnd, 0)) Atomics.store(walEnd, 0, lsn);
    // Counted too: a commit may rewrite the last page without moving the end.
    Atomics.add(walEnd, 1, 1n);
  },
});
const batcher = new ResponseBatcher(BATCH_BYTES);

/** Blocks the (synchronously running) statement while the client is behind. */
function waitForClient(): void {
  for (let n = Atomics.load(unacked, 0); n > OUTPUT_WINDOW; n = Atomics.load(unacked, 0)) {
    // Bounded waits: a terminate (cancel, timeout) takes effect between them at the latest.
    Atomics.wait(unacked, 0, n, 100);
  }
}

async function exec(pg: ParkedPglite['pg'], id: number, data: ArrayBuffer): Promise<void> {
  Atomics.store(unacked, 0, 0);
  const post = (batch: ArrayBuffer, length: number) => {
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
    const rest = batcher.finish();
    reply({ type: 'broken', id, message: fatal, ...rest }, [rest.data]);
  };
  await pg.execProtocolRawStream(new Uint8Array(data), { onRawData });
  if (broken) return;
  durable.flushWal();
  const rest = batcher.finish();
  reply({ type: 'result', id, ...rest }, [rest.data]);
}

let parked = await park();
reply({ type: 'parked' });
let open: ParkedPglite | undefined;

for await (const [request] of on(port, 'message') as AsyncIterable<[WorkerRequest]>) {
  if (request.type === 'open') {
    try {
      if (parked instanceof Error) throw parked;
      open = parked;
      const opened = await openParked(parked, request.dataDir, request.readOnly);
      // WAL positions are reported from here on, with the database's own segment size.
      const [segment] = (
        await parked.pg.query<{ bytes: string }>(
          "SELECT setting AS bytes FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'",
        )
      ).rows;
      durable.setSegmentSize(Number(segment?.bytes ?? 0));
      reply({ type: 'opened', ...opened });
      collectWhenIdle();
    } catch (err) {
      reply({ type: 'open-failed', message: messageText(err) });
      break;
    }
  } else if (request.type === 'close') {
    await open?.pg.close().catch(() => undefined);
    durable.syncAll();
    durable.setSegmentSize(0);
    Atomics.store(walEnd, 0, 0n);
    open = undefined;
    reply({ type: 'closed', id: request.id });
    if (!request.park) break;
    gc();
    parked = await park();
    reply({ type: 'parked' });
  } else if (open) {
    try {
      await exec(open.pg, request.id, request.data);
    } catch (err) {
      batcher.finish(); // drops what the failed request left, so the next starts empty
      reply({
        type: 'broken',
        id: request.id,
        message: messageText(err),
        data: new ArrayBuffer(0),
        length: 0,
      });
    }
    collectWhenIdle();
  }
}
