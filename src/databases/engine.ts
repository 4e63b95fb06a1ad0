import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { WorkerInit, WorkerReply, WorkerRequest } from './engine-worker.js';
import type { PgliteArtifacts, WasmModule } from './pglite-open.js';

export { READ_ONLY_ROLE, REPORTED_PARAMETERS } from './pglite-open.js';

/**
 * One open database: the single Postgres session behind it, spoken to in raw protocol bytes.
 * Each engine is a PGlite in its own worker thread.
 */
export interface Engine {
  /** Executes raw frontend messages and returns the raw backend response. */
  exec(messages: Uint8Array): Promise<Uint8Array>;
  /** SQL that restores the session's baseline identity after it was reset; empty when none. */
  readonly baselineSql: string;
  /** Values of the parameters a real server reports in ParameterStatus at startup. */
  readonly parameters: Readonly<Record<string, string>>;
  /** Stops a running statement by ending the worker; the engine is dead afterwards. */
  kill(): Promise<void>;
  close(): Promise<void>;
}

/** The engine was killed (cancel, statement timeout) while a request was running. */
export class EngineKilledError extends Error {}

type Artifacts = Omit<PgliteArtifacts, 'fsBundle'> & { fsBundle: ArrayBuffer };
let artifacts: Promise<Artifacts> | undefined;

/** Compiles PGlite's WASM once per process; every worker gets the compiled modules. */
function loadArtifacts(): Promise<Artifacts> {
  artifacts ??= (async () => {
    const require = createRequire(import.meta.url);
    const dist = path.dirname(require.resolve('@electric-sql/pglite'));
    const [pglite, initdb, bundle] = await Promise.all([
      readFile(path.join(dist, 'pglite.wasm')),
      readFile(path.join(dist, 'initdb.wasm')),
      readFile(path.join(dist, 'pglite.data')),
    ]);
    return {
      pgliteWasmModule: await wasm.compile(pglite),
      initdbWasmModule: await wasm.compile(initdb),
      fsBundle: bundle.buffer.slice(bundle.byteOffset, bundle.byteOffset + bundle.byteLength) as ArrayBuffer,
    };
  })();
  return artifacts;
}

/** In development and tests the worker is TypeScript, loaded through tsx; built code is plain JS. */
function workerUrl(): URL {
  const ts = import.meta.url.endsWith('.ts');
  return new URL(ts ? './engine-worker-dev.mjs' : './engine-worker.js', import.meta.url);
}

/** Node's types lack WebAssembly as a value outside the DOM lib. */
const wasm = (globalThis as unknown as { WebAssembly: { compile(bytes: Uint8Array): Promise<WasmModule> } })
  .WebAssembly;

class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (d: Uint8Array) => void; reject: (e: Error) => void }
  >();
  private dead: Error | undefined;
  baselineSql = '';
  parameters: Record<string, string> = {};

  constructor(private readonly worker: Worker) {
    worker.on('message', (reply: WorkerReply) => this.onReply(reply));
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', () => this.fail(new EngineKilledError('database engine stopped')));
  }

  private onReply(reply: WorkerReply): void {
    if (reply.type === 'opened' || reply.type === 'open-failed') return;
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (reply.type === 'result') waiter.resolve(new Uint8Array(reply.data));
    else if (reply.type === 'failed') waiter.reject(new Error(reply.message));
    else waiter.resolve(new Uint8Array());
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const waiter of this.pending.values()) waiter.reject(this.dead);
    this.pending.clear();
  }

  private request(make: (id: number) => WorkerRequest, transfer: ArrayBuffer[] = []): Promise<Uint8Array> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(make(id), transfer);
    });
  }

  exec(messages: Uint8Array): Promise<Uint8Array> {
    // Copy into a buffer of our own that can be transferred (the input may share a pool slab).
    const data = new Uint8Array(messages).buffer as ArrayBuffer;
    return this.request((id) => ({ type: 'exec', id, data }), [data]);
  }

  async kill(): Promise<void> {
    this.fail(new EngineKilledError('statement interrupted'));
    await this.worker.terminate();
  }

  async close(): Promise<void> {
    if (!this.dead) await this.request((id) => ({ type: 'close', id })).catch(() => undefined);
    this.dead ??= new EngineKilledError('database closed');
    await this.worker.terminate();
  }
}

/** Opens the database at `dataDir` in a new worker thread. */
export async function openEngine(dataDir: string, opts: { readOnly: boolean }): Promise<Engine> {
  const init: WorkerInit = { dataDir, readOnly: opts.readOnly, artifacts: await loadArtifacts() };
  const worker = new Worker(workerUrl(), { workerData: init });
  const engine = new WorkerEngine(worker);
  const opened = await new Promise<Extract<WorkerReply, { type: 'opened' }>>((resolve, reject) => {
    const onMessage = (reply: WorkerReply) => {
      if (reply.type === 'opened') resolve(reply);
      if (reply.type === 'open-failed') reject(new Error(reply.message));
    };
    worker.on('message', onMessage);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`database worker exited with code ${code}`)));
  }).catch(async (err: unknown) => {
    await worker.terminate();
    throw err;
  });
  engine.baselineSql = opened.baselineSql;
  engine.parameters = opened.parameters;
  return engine;
}
