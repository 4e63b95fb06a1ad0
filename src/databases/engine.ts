import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './engine-worker.js';
import type { PgliteArtifacts, WasmModule } from './pglite-open.js';
import { shareBundle } from './shared-bundle.js';
import { workerUrl } from './worker-entry.js';

export { postgresSettings, READ_ONLY_ROLE, REPORTED_PARAMETERS } from './pglite-open.js';

/**
 * One open database: the single Postgres session behind it, spoken to in raw protocol bytes.
 * Each engine is a PGlite in its own worker thread.
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
  /** Stops a running statement by ending the worker; the engine is dead afterwards. */
  kill(): Promise<void>;
  close(): Promise<void>;
}

/** Takes part of a response; a returned promise settles once the client has taken it in. */
export type OnChunk = (chunk: Uint8Array) => Promise<void> | undefined;

/** The engine was killed (cancel, statement timeout) while a request was running. */
export class EngineKilledError extends Error {}

let artifacts: Promise<PgliteArtifacts> | undefined;

/** Compiles PGlite's WASM once per process; every worker gets the compiled modules. */
function loadArtifacts(): Promise<PgliteArtifacts> {
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
      fsBundle: shareBundle(bundle),
    };
  })();
  return artifacts;
}

/** Node's types lack WebAssembly as a value outside the DOM lib. */
const wasm = (globalThis as unknown as { WebAssembly: { compile(bytes: Uint8Array): Promise<WasmModule> } })
  .WebAssembly;

type ReplyOf<T extends WorkerReply['type']> = Extract<WorkerReply, { type: T }>;

/** The next reply of one of `types`; rejects when the worker fails or exits first. */
function nextReply<T extends WorkerReply['type']>(worker: Worker, types: readonly T[]): Promise<ReplyOf<T>> {
  return new Promise((resolve, reject) => {
    const onMessage = (reply: WorkerReply) => {
      if (!(types as readonly string[]).includes(reply.type)) return;
      cleanup();
      resolve(reply as ReplyOf<T>);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onExit = (code: number) => {
      cleanup();
      reject(new Error(`database worker exited with code ${code}`));
    };
    const cleanup = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

/**
 * A worker thread, how many databases it has served, and whether it is parked. Its own listener
 * notes every `parked` reply, so one that arrives before anyone waits for it is not lost.
 */
class HostWorker {
  uses = 0;
  private parked = false;
  private gone: Error | undefined;
  private waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;

  /** Output bytes the worker posted that the client has not taken in (shared with the worker). */
  readonly unacked: Int32Array;

  constructor(
    readonly worker: Worker,
    unacked: SharedArrayBuffer,
  ) {
    this.unacked = new Int32Array(unacked);
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

interface Pending {
  resolve: (d: Uint8Array) => void;
  reject: (e: Error) => void;
  onChunk?: OnChunk;
  /** Parts received for a request without `onChunk`. */
  parts?: Uint8Array[];
}

class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: Error | undefined;
  private readonly onMessage = (reply: WorkerReply) => this.onReply(reply);
  private readonly onError = (err: Error) => this.fail(err);
  private readonly onExit = () => this.fail(new EngineKilledError('database engine stopped'));

  constructor(
    private readonly host: HostWorker,
    private readonly pool: EngineHost,
    readonly baselineSql: string,
    readonly parameters: Record<string, string>,
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
    if (reply.type !== 'result' && reply.type !== 'failed' && reply.type !== 'closed') return;
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (reply.type === 'result') {
      const rest = new Uint8Array(reply.data, 0, reply.length);
      waiter.resolve(waiter.parts ? Buffer.concat([...waiter.parts, rest]) : rest);
    } else if (reply.type === 'failed') waiter.reject(new Error(reply.message));
    else waiter.resolve(new Uint8Array());
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
  }

  private detach(): void {
    this.host.worker.off('message', this.onMessage);
    this.host.worker.off('error', this.onError);
    this.host.worker.off('exit', this.onExit);
  }

  private request(
    make: (id: number) => WorkerRequest,
    transfer: ArrayBuffer[] = [],
    onChunk?: OnChunk,
  ): Promise<Uint8Array> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onChunk });
      this.host.worker.postMessage(make(id), transfer);
    });
  }

  exec(messages: Uint8Array, onChunk?: OnChunk): Promise<Uint8Array> {
    // Copy into a buffer of our own that can be transferred (the input may share a pool slab).
    const data = new Uint8Array(messages).buffer as ArrayBuffer;
    return this.request((id) => ({ type: 'exec', id, data }), [data], onChunk);
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

const REFILL_DELAY_MS = 250;

export interface EngineHostOptions {
  /** Workers kept parked (a PGlite prepared up to Postgres' start), so an open skips that part. */
  warm: number;
  /** Postgres `-c` settings for every database (see postgresSettings). */
  settings: string[];
  /** Databases one worker serves before it is replaced, bounding whatever a worker accumulates. */
  maxUses?: number;
  logger?: Logger;
}

/**
 * Starts database engines: one worker thread per open database, taken from a small pool of
 * parked workers when one is ready. A worker whose database closed cleanly parks again and goes
 * back to the pool; an interrupted one is terminated.
 */
export class EngineHost {
  private readonly ready: HostWorker[] = [];
  /** Workers on their way to the pool: spawning, or parking again after their database closed. */
  private preparing = 0;
  /** Of those, the ones parking again (~0.1 s; a new worker takes ~0.5 s). */
  private recycling = 0;
  /** Opens waiting for one of those workers (cheaper than spawning yet another). */
  private readonly waiting: { resolve: (h: HostWorker) => void; reject: (e: unknown) => void }[] = [];
  private refillScheduled = false;
  private closed = false;
  /** Workers started, and workers that parked again after their database closed. */
  readonly stats = { spawned: 0, recycled: 0 };
  private readonly maxUses: number;

  constructor(private readonly opts: EngineHostOptions) {
    this.maxUses = opts.maxUses ?? 50;
  }

  /** Fills the pool in the background. */
  start(): void {
    this.refill();
  }

  /** Opens the database at `dataDir` in a worker of its own. */
  async open(dataDir: string, opts: { readOnly: boolean }): Promise<Engine> {
    if (this.closed) throw new Error('engine host closed');
    const host = await this.acquire();
    host.worker.ref();
    host.unpark();
    host.uses++;
    try {
      const reply = nextReply(host.worker, ['opened', 'open-failed']);
      host.worker.postMessage({ type: 'open', dataDir, readOnly: opts.readOnly } satisfies WorkerRequest);
      const opened = await reply.catch(async (err: unknown) => {
        await host.worker.terminate();
        throw err;
      });
      if (opened.type === 'open-failed') {
        await host.worker.terminate();
        throw new Error(opened.message);
      }
      return new WorkerEngine(host, this, opened.baselineSql, opened.parameters);
    } finally {
      this.scheduleRefill();
    }
  }

  /** Whether a worker whose database is closing should park again for the pool. */
  wantsBack(host: HostWorker): boolean {
    if (this.closed || host.uses >= this.maxUses) return false;
    // Counting only recycled workers: parking again beats a spawn that may still be starting.
    return this.waiting.length > 0 || this.ready.length + this.recycling < this.opts.warm;
  }

  /** Adds a worker that was told to park again, once it has. */
  takeBack(host: HostWorker): void {
    this.recycling++;
    this.stats.recycled++;
    const parked = host.whenParked().finally(() => this.recycling--);
    this.prepare(
      parked.then(() => host),
      host,
    );
  }

  /** Terminates the parked workers; engines in use close on their own. */
  async close(): Promise<void> {
    this.closed = true;
    for (const waiter of this.waiting.splice(0)) waiter.reject(new Error('engine host closed'));
    await Promise.all(this.ready.splice(0).map((h) => h.worker.terminate()));
  }

  /** A parked worker: a ready one, the next one to get ready, or a new one. */
  private acquire(): Promise<HostWorker> {
    const host = this.ready.shift();
    if (host) return Promise.resolve(host);
    if (this.preparing > this.waiting.length) {
      return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
    }
    return this.spawn();
  }

  private prepare(coming: Promise<HostWorker>, existing?: HostWorker): void {
    this.preparing++;
    coming.then(
      (host) => {
        this.preparing--;
        this.keep(host);
      },
      (err: unknown) => {
        this.preparing--;
        if (existing) void existing.worker.terminate();
        else this.opts.logger?.warn({ err }, 'could not prepare a database worker');
        // Whoever waited for this worker gets a new one of their own.
        const waiter = this.waiting.shift();
        if (waiter) this.spawn().then(waiter.resolve, waiter.reject);
      },
    );
  }

  private keep(host: HostWorker): void {
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter.resolve(host);
      return;
    }
    if (this.closed || this.ready.length >= this.opts.warm) {
      void host.worker.terminate();
      return;
    }
    // A parked worker alone must not keep the process alive.
    host.worker.unref();
    this.ready.push(host);
  }

  /**
   * Replaces used workers a little later: a spawn right away would compete with the open that
   * just happened for the cores, and a database closing meanwhile refills the pool more cheaply.
   */
  private scheduleRefill(): void {
    if (this.refillScheduled) return;
    this.refillScheduled = true;
    setTimeout(() => {
      this.refillScheduled = false;
      this.refill();
    }, REFILL_DELAY_MS).unref();
  }

  private refill(): void {
    while (!this.closed && this.ready.length + this.preparing < this.opts.warm) this.prepare(this.spawn());
  }

  private async spawn(): Promise<HostWorker> {
    const unacked = new SharedArrayBuffer(4);
    const init: WorkerInit = { artifacts: await loadArtifacts(), settings: this.opts.settings, unacked };
    this.stats.spawned++;
    const worker = new Worker(await workerUrl(), {
      workerData: init,
      // A small young generation: the worker allocates little per request, and every MB it keeps
      // committed is resident memory for as long as its database is open.
      resourceLimits: { maxYoungGenerationSizeMb: 4 },
    });
    const host = new HostWorker(worker, unacked);
    await host.whenParked().catch(async (err: unknown) => {
      await worker.terminate();
      throw err;
    });
    return host;
  }
}
