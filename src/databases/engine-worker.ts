import { on } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { openParked, type ParkedPglite, type PgliteArtifacts, parkPglite } from './pglite-open.js';

/**
 * Worker thread hosting one database's PGlite at a time, so a long statement in one database
 * never blocks the gateway's event loop or another database, and busy databases use several
 * cores. It prepares a PGlite ahead of time and waits (parked) for a database to open; after a
 * clean close it may park again and serve another. Requests and responses cross as transferred
 * ArrayBuffers (no copy).
 */

export interface WorkerInit {
  artifacts: PgliteArtifacts;
  /** Postgres `-c` settings. */
  settings: string[];
}

export type WorkerRequest =
  | { type: 'open'; dataDir: string; readOnly: boolean }
  | { type: 'exec'; id: number; data: ArrayBuffer }
  /** `park`: prepare the next PGlite after closing (the worker is kept for reuse). */
  | { type: 'close'; id: number; park: boolean };

export type WorkerReply =
  | { type: 'parked' }
  | { type: 'opened'; baselineSql: string; parameters: Record<string, string> }
  | { type: 'open-failed'; message: string }
  | { type: 'result'; id: number; data: ArrayBuffer }
  | { type: 'failed'; id: number; message: string }
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
    return await parkPglite(init.artifacts, init.settings);
  } catch (err) {
    return err instanceof Error ? err : new Error(messageText(err));
  }
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
      reply({ type: 'opened', ...opened });
      collectWhenIdle();
    } catch (err) {
      reply({ type: 'open-failed', message: messageText(err) });
      break;
    }
  } else if (request.type === 'close') {
    await open?.pg.close().catch(() => undefined);
    open = undefined;
    reply({ type: 'closed', id: request.id });
    if (!request.park) break;
    gc();
    parked = await park();
    reply({ type: 'parked' });
  } else if (open) {
    try {
      const result = await open.pg.execProtocolRaw(new Uint8Array(request.data));
      // Own the bytes before transferring: the result may be a view into WASM memory.
      const data =
        result.byteOffset === 0 && result.byteLength === result.buffer.byteLength
          ? (result.buffer as ArrayBuffer)
          : result.slice().buffer;
      reply({ type: 'result', id: request.id, data }, [data]);
    } catch (err) {
      reply({ type: 'failed', id: request.id, message: messageText(err) });
    }
    collectWhenIdle();
  }
}
