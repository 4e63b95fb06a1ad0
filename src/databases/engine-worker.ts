import { parentPort, workerData } from 'node:worker_threads';
import type { PGlite } from '@electric-sql/pglite';
import { openPglite, type PgliteArtifacts } from './pglite-open.js';

/**
 * Worker thread hosting one database's PGlite, so a long statement in one database never blocks
 * the gateway's event loop or another database, and busy databases use several cores. Requests
 * and responses cross as transferred ArrayBuffers (no copy).
 */

export interface WorkerInit {
  dataDir: string;
  readOnly: boolean;
  artifacts: Omit<PgliteArtifacts, 'fsBundle'> & { fsBundle: ArrayBuffer };
}

export type WorkerRequest = { type: 'exec'; id: number; data: ArrayBuffer } | { type: 'close'; id: number };

export type WorkerReply =
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

let pg: PGlite | undefined;
try {
  const opened = await openPglite(init.dataDir, init.readOnly, {
    ...init.artifacts,
    fsBundle: new Blob([init.artifacts.fsBundle]),
  });
  pg = opened.pg;
  reply({ type: 'opened', baselineSql: opened.baselineSql, parameters: opened.parameters });
} catch (err) {
  reply({ type: 'open-failed', message: String((err as Error)?.message ?? err) });
}

port.on('message', async (request: WorkerRequest) => {
  if (!pg) return;
  if (request.type === 'close') {
    await pg.close().catch(() => undefined);
    reply({ type: 'closed', id: request.id });
    return;
  }
  try {
    const result = await pg.execProtocolRaw(new Uint8Array(request.data));
    // Own the bytes before transferring: the result may be a view into WASM memory.
    const data =
      result.byteOffset === 0 && result.byteLength === result.buffer.byteLength
        ? (result.buffer as ArrayBuffer)
        : result.slice().buffer;
    reply({ type: 'result', id: request.id, data }, [data]);
  } catch (err) {
    reply({ type: 'failed', id: request.id, message: String((err as Error)?.message ?? err) });
  }
});
