import { getHeapStatistics } from 'node:v8';
import type { PgliteModule } from './deferred-fs.js';

/**
 * The memory one database's worker holds, measured inside the worker without a request of its
 * own: Postgres' shared memory (shared_memory_size, read once at open), the memory its memory
 * contexts have allocated (MemoryContextMemAllocated(TopMemoryContext), a few µs of WASM), and
 * the worker isolate's JS heap in use. The worker writes the numbers into shared memory after an
 * open and at most once a MEASURE_EVERY_MS after a request or while idle (a clock read per
 * request otherwise); the gateway reads them when it reports (the live stats).
 *
 * Not counted: WASM linear memory reserved but never touched (the 190 MB PGlite reserves at
 * start is mostly never resident), and pages malloc keeps after Postgres freed them.
 */

/** BigInt64s of the shared buffer: Postgres bytes, JS heap bytes. */
export const MEMORY_SLOTS = 2;
const MEASURE_EVERY_MS = 1000;

export const newMemoryBuffer = () => new SharedArrayBuffer(8 * MEMORY_SLOTS);

interface PostgresExports {
  wasmMemory: { buffer: ArrayBufferLike };
  /** Address of the `TopMemoryContext` pointer in linear memory. */
  _TopMemoryContext: number;
  _MemoryContextMemAllocated(context: number, recurse: number): number;
}

/** The worker's side: measures and publishes. */
export class MemoryMeter {
  private readonly slots: BigInt64Array;
  private mod: Partial<PostgresExports> | undefined;
  private sharedBytes = 0;
  private measuredAt = 0;

  constructor(buffer: SharedArrayBuffer) {
    this.slots = new BigInt64Array(buffer);
  }

  /** The module of the PGlite about to serve a database (before Postgres starts). */
  install(mod: PgliteModule): void {
    this.mod = mod as unknown as Partial<PostgresExports>;
  }

  /** The database opened: its shared memory, then a first measurement. */
  opened(sharedBytes: number): void {
    this.sharedBytes = sharedBytes;
    this.measure();
  }

  /** After a request, or while idle: measures when the last measurement is old enough. */
  maybeMeasure(): void {
    if (performance.now() - this.measuredAt >= MEASURE_EVERY_MS) this.measure();
  }

  /** The database closed: nothing to report until the next open. */
  closed(): void {
    this.sharedBytes = 0;
    Atomics.store(this.slots, 0, 0n);
    Atomics.store(this.slots, 1, 0n);
  }

  /** Only between requests: Postgres is not running then, so walking its contexts is safe. */
  private measure(): void {
    this.measuredAt = performance.now();
    let contexts = 0;
    const mod = this.mod;
    // Checked here, not at install: the exports may be attached after the module is handed out.
    if (
      mod?.wasmMemory &&
      typeof mod._TopMemoryContext === 'number' &&
      typeof mod._MemoryContextMemAllocated === 'function'
    ) {
      try {
        const top = new DataView(mod.wasmMemory.buffer).getUint32(mod._TopMemoryContext, true);
        if (top !== 0) contexts = mod._MemoryContextMemAllocated(top, 1) >>> 0;
      } catch {
        contexts = 0; // a PGlite whose exports differ: report the rest
      }
    }
    Atomics.store(this.slots, 0, BigInt(this.sharedBytes + contexts));
    Atomics.store(this.slots, 1, BigInt(getHeapStatistics().used_heap_size));
  }
}

/** The gateway's side: the last numbers the worker published; null before the first. */
export function readMemory(buffer: BigInt64Array): number | null {
  const total = Number(Atomics.load(buffer, 0)) + Number(Atomics.load(buffer, 1));
  return total > 0 ? total : null;
}
