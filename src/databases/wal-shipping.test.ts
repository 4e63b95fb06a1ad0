import { describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import type { WalObjects } from '../storage/wal-objects.js';
import type { Database } from './database.js';
import { WalShipping } from './wal-shipping.js';

/**
 * The worker moves the WAL end, then counts the write (engine-worker.ts); shipping reads the two
 * from another thread. These fakes let a write land between its two reads, which threads do
 * rarely and a test cannot otherwise arrange.
 */
const PAGE = 8192n;
const START = 0x100_0000n;

class FakeEngine {
  end = START;
  writes = 0n;
  /** Runs once, right after the next read of the end or the count (a write from the worker). */
  onRead: (() => void) | undefined;

  write(end: bigint): void {
    if (end > this.end) this.end = end;
    this.writes++;
  }
  walEnd(): bigint {
    const end = this.end;
    this.fire();
    return end;
  }
  walWrites(): bigint {
    const writes = this.writes;
    this.fire();
    return writes;
  }
  private fire(): void {
    const f = this.onRead;
    this.onRead = undefined;
    f?.();
  }
}

function setup() {
  const engine = new FakeEngine();
  const db = {
    id: 'db',
    engine,
    readOnly: true,
    walLsn: async () => `0/${START.toString(16)}`,
  } as unknown as Database;
  const shipped: Array<[bigint, bigint]> = [];
  const wal = {
    ship: async (_id: string, _dir: string, from: bigint, to: bigint) => {
      shipped.push([from, to]);
      return [];
    },
  } as unknown as WalObjects;
  const shipping = new WalShipping({
    wal,
    mode: 'sync',
    intervalMs: 0,
    waitTimeoutMs: 1_000,
    maxBacklogBytes: 0,
    dataDirOf: () => '/nowhere',
    logger: createLogger({ level: 'silent', pretty: false }),
  });
  return { engine, db, shipped, shipping };
}

describe('WAL shipping', () => {
  it('never counts as shipped a write that landed past the end it shipped to', async () => {
    const { engine, db, shipped, shipping } = setup();
    await shipping.onOpen(db);
    engine.write(START + PAGE);
    // A new page is written while the shipment reads where the WAL ends and how often it was
    // written (beforeCheckpoint ships at once, with no read before the shipment's own).
    engine.onRead = () => engine.write(START + 2n * PAGE);
    await shipping.beforeCheckpoint(db);
    // Whichever side of the two reads the write fell on, the next shipment takes it.
    await shipping.beforeCheckpoint(db);
    expect(shipped.at(-1)?.[1]).toBe(START + 2n * PAGE);
    expect(shipping.backlogBytes()).toBe(0);
  });

  it('counts a rewrite of the last shipped page as backlog until it ships again', async () => {
    const { engine, db, shipped, shipping } = setup();
    await shipping.onOpen(db);
    engine.write(START + PAGE);
    await db.walBarrier?.();
    expect(shipping.backlogBytes()).toBe(0);
    // A commit fills more of the same page: the end does not move, the page must go again.
    engine.write(START + PAGE);
    expect(shipping.backlogBytes()).toBe(Number(PAGE));
    await db.walBarrier?.();
    expect(shipped.at(-1)).toEqual([START + PAGE, START + PAGE]);
    expect(shipping.backlogBytes()).toBe(0);
  });
});
