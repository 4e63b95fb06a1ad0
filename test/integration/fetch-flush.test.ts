import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { removeDir } from '../../src/pgdata/extract.js';
import { FlushLater } from '../../src/pgdata/file-flush.js';
import { unmarkArchived } from '../../src/storage/local-marks.js';
import { codeOf } from '../helpers/clients.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * FSYNC=on and a copy fetched from the archive (issue 14's evicted open): the copy answers
 * queries before its files are flushed to disk, but no write to it is acknowledged before the
 * flush is done; a durable mark (`_unflushed/<id>`) covers the time between, and a restart that
 * finds it fetches the copy again. A fetch whose WAL replay fails leaves no copy behind, so the
 * next open cannot start from a base without its shipped commits.
 */

let t: TestServer;
let archiveDir: string;
let pw: string;
const ID = 'flushed';

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-fetch-flush-'));
  t = await startTestServer({
    ARCHIVE_URL: pathToFileURL(archiveDir).href,
    DURABILITY: 'async',
    WAL_SHIP_INTERVAL: '100ms',
    FSYNC: 'on',
  });
  pw = await t.createDatabase(ID);
  await withClient(t.pgConfig(ID, pw), (c) => c.query('create table ledger (n int primary key)'));
}, 120_000);

afterAll(async () => {
  await t?.close();
  if (archiveDir) await rm(archiveDir, { recursive: true, force: true });
});

const flushOriginal = FlushLater.prototype.flush;
afterEach(() => {
  FlushLater.prototype.flush = flushOriginal;
});

/** Holds every fetched copy's flush until `release()`: the window a busy disk leaves open, made certain. */
function holdFlushes() {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let started = 0;
  FlushLater.prototype.flush = async function (this: FlushLater) {
    started++;
    await gate;
    return flushOriginal.call(this);
  };
  return { release, started: () => started };
}

const dir = () => path.join(t.dataDir, ID);
const mark = () => path.join(t.dataDir, '_unflushed', ID);
const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/** Closes the database and drops its local copy, as LOCAL_EVICT_AFTER would. */
async function evict(): Promise<void> {
  await t.server.registry.close(ID);
  await t.server.registry.whileUnused(ID, async () => {
    await removeDir(dir());
    await unmarkArchived(dir());
  });
}

const count = (c: pg.Client) =>
  c.query<{ n: number }>('select count(*)::int as n from ledger').then((r) => r.rows[0]?.n);

describe('a copy fetched with FSYNC=on', () => {
  it('answers reads before it is flushed, and acknowledges a write only once it is', async () => {
    await withClient(t.pgConfig(ID, pw), (c) => c.query('insert into ledger values (1)'));
    await evict();
    const held = holdFlushes();
    const c = new pg.Client(t.pgConfig(ID, pw));
    await c.connect();
    try {
      expect(await count(c)).toBe(1);
      expect(held.started()).toBe(1);
      expect(await exists(mark())).toBe(true);
      let acknowledged = false;
      const insert = c.query('insert into ledger values (2)').then(() => {
        acknowledged = true;
      });
      await new Promise((r) => setTimeout(r, 500));
      expect(acknowledged).toBe(false);
      held.release();
      await insert;
      // The mark goes once the flush is done, before the acknowledgement.
      expect(await exists(mark())).toBe(false);
      expect(await count(c)).toBe(2);
      // Nothing is pending any more: the next write goes through at once.
      await c.query('insert into ledger values (3)');
    } finally {
      await c.end();
    }
  });

  it('refuses a write when its flush fails, and is fetched again on its next open', async () => {
    await evict();
    FlushLater.prototype.flush = async () => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    };
    const c = new pg.Client(t.pgConfig(ID, pw));
    c.on('error', () => undefined);
    await c.connect();
    // Reads go on.
    expect(await count(c)).toBeTypeOf('number');
    const err = await c.query('insert into ledger values (99)').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(codeOf(err)).toBe('58030');
    await c.end().catch(() => undefined);
    FlushLater.prototype.flush = flushOriginal;
    await t.server.registry.close(ID);
    // A file only this local copy has tells whether the next open uses it or fetches a new one.
    const sentinel = path.join(dir(), 'kept-local-copy');
    await writeFile(sentinel, '');
    await withClient(t.pgConfig(ID, pw), (c2) => c2.query('delete from ledger where n = 99'));
    expect(await exists(sentinel)).toBe(false);
    expect(await exists(mark())).toBe(false);
  });

  it('is dropped and fetched again when a restart finds its mark (an OS crash before the flush)', async () => {
    await withClient(t.pgConfig(ID, pw), (c) => c.query('insert into ledger values (4)'));
    await t.server.registry.close(ID);
    await t.restart();
    // What an OS crash mid-flush can leave: the mark, and a copy missing what was not on disk.
    await t.server.registry.close(ID);
    await t.server.registry.whileUnused(ID, async () => {
      await rm(path.join(dir(), 'base'), { recursive: true, force: true });
      await mkdir(path.dirname(mark()), { recursive: true });
      await writeFile(mark(), '');
    });
    await t.restart();
    expect(await exists(mark())).toBe(false);
    const rows = await withClient(t.pgConfig(ID, pw), (c) =>
      c.query<{ n: number }>('select n from ledger order by n').then((r) => r.rows.map((row) => row.n)),
    );
    expect(rows).toEqual([1, 2, 3, 4]);
  });

  it('leaves no local copy when a shipped WAL piece cannot be replayed, and comes back whole once it can', async () => {
    // Opened and closed without writes, the database gets WAL pieces (checkpoints) after its newest base.
    for (let i = 0; i < 2; i++) {
      await withClient(t.pgConfig(ID, pw), (c) => c.query('select 1'));
      await t.server.registry.close(ID);
    }
    const [base] = await t.server.catalog.listVersions(ID);
    const pieces = (await t.server.catalog.listWal(ID)).filter((p) => base && p.writtenAt > base.walSince);
    const piece = pieces.at(-1);
    expect(piece).toBeDefined();
    if (!piece) return;
    await evict();
    const file = path.join(archiveDir, ...piece.key.split('/'));
    const original = await readFile(file);
    await writeFile(file, Buffer.concat([original, Buffer.from('tampered')]));
    try {
      const err = await withClient(t.pgConfig(ID, pw), (c) => c.query('select 1')).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(codeOf(err)).toBe('57P03');
      expect(await exists(dir())).toBe(false);
      expect(await exists(mark())).toBe(false);
    } finally {
      await writeFile(file, original);
    }
    const rows = await withClient(t.pgConfig(ID, pw), (c) =>
      c.query<{ n: number }>('select n from ledger order by n').then((r) => r.rows.map((row) => row.n)),
    );
    expect(rows).toEqual([1, 2, 3, 4]);
  });
});
