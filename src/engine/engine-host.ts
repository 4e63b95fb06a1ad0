import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import { newChannelBuffer } from './channel.js';
import { DURABILITY_COUNTERS, DurabilityCounter, WAL_SLOTS_BYTES } from './durable-fs.js';
import { type Engine, WorkerEngine } from './engine.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './engine-worker.js';
import { bundleExtensions, type ExtensionBundle, loadCatalog } from './extensions.js';
import { HostWorker, type WorkerPool } from './host-worker.js';
import { newMemoryBuffer } from './memory-meter.js';
import type { PgliteArtifacts, WasmModule } from './pglite-open.js';
import { shareBundle } from './shared-bundle.js';
import { workerUrl } from './worker-entry.js';

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

const extensionBundles = new Map<string, Promise<ExtensionBundle | undefined>>();

/** Unpacks the allowed extensions once per process (per allow-list); undefined when none. */
function loadExtensions(allowed: readonly string[]): Promise<ExtensionBundle | undefined> {
  const key = [...allowed].sort().join(',');
  let bundle = extensionBundles.get(key);
  if (!bundle) {
    bundle =
      key === '' ? Promise.resolve(undefined) : loadCatalog().then((c) => bundleExtensions(c, allowed));
    extensionBundles.set(key, bundle);
  }
  return bundle;
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

const REFILL_DELAY_MS = 250;

export interface EngineHostOptions {
  /** Workers kept parked (a PGlite prepared up to Postgres' start), so an open skips that part. */
  warm: number;
  /** Postgres `-c` settings for every database (see postgresSettings). */
  settings: string[];
  /** Largest WASM heap a database may grow to (MAX_DATABASE_MEMORY, heap-limit.ts); 0 or unset = PGlite's 2 GiB. */
  maxHeapBytes?: number;
  /** MAX_DATABASE_SIZE: bytes of a database's base/ past which its files may not grow (size-quota.ts); 0 or unset = none. */
  maxDataBytes?: number;
  /** Databases one worker serves before it is replaced, bounding whatever a worker accumulates. */
  maxUses?: number;
  /** FSYNC: make commits and checkpoints durable on disk (engine/durable-fs.ts). Default true. */
  fsync?: boolean;
  /**
   * Extensions databases may create (CREATE EXTENSION) or LOAD, by name; `all` stands for every
   * one but those that must be preloaded (see extensions.ts). Default: none (PGlite's plpgsql).
   */
  extensions?: readonly string[];
  logger?: Logger;
  /**
   * Small requests and replies cross through shared memory (channel.ts) instead of postMessage.
   * Default true; false exists to measure what it saves (bench/engine-hop.ts).
   */
  inlineRequests?: boolean;
}

/**
 * Starts database engines: one worker thread per open database, taken from a small pool of
 * parked workers when one is ready. A worker whose database closed cleanly parks again and goes
 * back to the pool; an interrupted one is terminated.
 */
export class EngineHost implements WorkerPool {
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
  /** fsync counts of all workers (DurabilityCounter), shared with them. */
  private readonly durability = new Int32Array(new SharedArrayBuffer(4 * DURABILITY_COUNTERS));
  /** How many workers watch their doorbell right now (engine-worker.ts: at most one at a time). */
  private readonly spinners = new SharedArrayBuffer(4);

  /** Workers parked and ready for the next open (metrics). */
  get warmCount(): number {
    return this.ready.length;
  }

  /** How many WAL and data-file syncs the workers made (FSYNC=on). */
  get syncs(): { wal: number; data: number } {
    return {
      wal: Atomics.load(this.durability, DurabilityCounter.WalSyncs),
      data: Atomics.load(this.durability, DurabilityCounter.DataSyncs),
    };
  }
  private readonly maxUses: number;
  private extensions: Promise<ExtensionBundle | undefined> | undefined;

  constructor(private readonly opts: EngineHostOptions) {
    this.maxUses = opts.maxUses ?? 50;
  }

  /**
   * Unpacks the allowed extensions (rejects when EXTENSIONS names one nothing ships), then fills
   * the pool in the background.
   */
  async start(): Promise<void> {
    const bundle = await this.extensionBundle();
    if (bundle) this.opts.logger?.debug({ extensions: bundle.names }, 'extensions installed');
    this.refill();
  }

  private extensionBundle(): Promise<ExtensionBundle | undefined> {
    this.extensions ??= loadExtensions(this.opts.extensions ?? []);
    return this.extensions;
  }

  /** Opens the database at `dataDir` in a worker of its own. */
  async open(dataDir: string, opts: { readOnly: boolean; writer?: boolean }): Promise<Engine> {
    if (this.closed) throw new Error('engine host closed');
    const host = await this.acquire();
    host.worker.ref();
    host.unpark();
    host.uses++;
    try {
      const reply = nextReply(host.worker, ['opened', 'open-failed']);
      const access = opts.readOnly ? 'reader' : opts.writer ? 'writer' : 'owner';
      host.post({ type: 'open', dataDir, readOnly: opts.readOnly, access } satisfies WorkerRequest);
      const opened = await reply.catch(async (err: unknown) => {
        await host.worker.terminate();
        throw err;
      });
      if (opened.type === 'open-failed') {
        await host.worker.terminate();
        throw new Error(opened.message);
      }
      if (opened.clearedSettings.length > 0) {
        this.opts.logger?.warn(
          { db: path.basename(dataDir), settings: opened.clearedSettings },
          'postgresql.auto.conf held settings (ALTER SYSTEM is refused now); cleared them before opening',
        );
      }
      return new WorkerEngine(
        host,
        this,
        opened.baselineSql,
        opened.parameters,
        this.opts.inlineRequests ?? true,
      );
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
    const walEnd = new SharedArrayBuffer(WAL_SLOTS_BYTES);
    const channel = newChannelBuffer();
    const memory = newMemoryBuffer();
    const [base, extensions] = await Promise.all([loadArtifacts(), this.extensionBundle()]);
    // A later -c wins: this replaces the empty shared_preload_libraries pinned before it.
    const preload = extensions?.preload.length
      ? [`shared_preload_libraries=${extensions.preload.join(',')}`]
      : [];
    const init: WorkerInit = {
      artifacts: { ...base, extensions },
      settings: [...this.opts.settings, ...preload],
      maxHeapBytes: this.opts.maxHeapBytes ?? 0,
      maxDataBytes: this.opts.maxDataBytes ?? 0,
      unacked,
      fsync: this.opts.fsync ?? true,
      durability: this.durability.buffer as SharedArrayBuffer,
      spinners: this.spinners,
      walEnd,
      channel,
      memory,
    };
    this.stats.spawned++;
    const worker = new Worker(await workerUrl(), {
      workerData: init,
      // A small young generation: the worker allocates little per request, and every MB it keeps
      // committed is resident memory for as long as its database is open.
      resourceLimits: { maxYoungGenerationSizeMb: 4 },
    });
    const host = new HostWorker(worker, unacked, walEnd, channel, memory);
    await host.whenParked().catch(async (err: unknown) => {
      await worker.terminate();
      throw err;
    });
    return host;
  }
}
