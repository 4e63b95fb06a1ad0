import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Catalog, SqlClient } from '../catalog/catalog.js';
import { type EmbeddedPglite, openEmbeddedPglite } from '../catalog/embedded.js';
import { openSqlCatalog } from '../catalog/sql-catalog.js';
import type { Logger } from '../log.js';
import { copyTree } from '../pgdata/copy-tree.js';
import { installDir, stageTarball } from '../pgdata/extract.js';
import { syncDir } from '../pgdata/file-flush.js';
import { requireWalReplay } from '../pgdata/pg-control.js';
import { hasPgVersion } from '../pgdata/pg-version.js';
import { type PgDataIdentity, packToFile } from '../pgdata/tarball.js';
import type { ArchiveStore } from './archive.js';
import { CatalogLease } from './catalog-lease.js';
import { NO_SIZE_LIMIT } from './snapshot-store.js';
import { describeError } from './version-objects.js';
import { nextSeq, readWal, WAL_PAGE, walLayout, writeWal } from './wal-objects.js';

/**
 * The embedded catalog (DATA_DIR/_catalog) archived like a database: base backups plus its WAL
 * shipped as immutable pieces, so a fresh node with an empty DATA_DIR and the same ARCHIVE_URL
 * gets back every database, credential and version. It cannot record its own pieces in itself,
 * so their names say everything a restore needs (order, WAL range, sha256) and a restore lists
 * them: `_catalog/data/<claim>/base-<seq>-<size>-<sha256>.tar.gz` and
 * `_catalog/data/<claim>/wal-<seq>-<start>-<end>-<sha256>`, where `<claim>` is the writer's
 * generation (catalog-lease.ts). A restore takes the newest generation that has a base, its newest
 * base, and every piece of that generation read after the base was copied, in order.
 *
 * The catalog's WAL is shipped soon after each write (coalesced, within WAL_SHIP_INTERVAL / 2),
 * and in DURABILITY=sync before the write returns, so a database's sync commit, whose WAL record
 * lands in the catalog, is acknowledged only once that record is archived too.
 */

const DATA = '_catalog/data/';
const BASE_NAME = /^base-([0-9a-f]{16})-(\d+)-([0-9a-f]{64})\.tar\.gz$/;
const WAL_NAME = /^wal-([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{64})$/;
/** A new base once this much WAL was shipped since the last one: bounds a restore's replay. */
const BASE_EVERY_WAL_BYTES = 16 * 1024 * 1024;
const MAX_PIECE = 16n * 1024n * 1024n;
const hex16 = (n: bigint) => n.toString(16).padStart(16, '0');

export interface ArchivedCatalogOptions {
  archive: ArchiveStore;
  /** DATA_DIR: the catalog is `_catalog` in it, its archive state `_catalog.archive.json`. */
  dataDir: string;
  templateDir: string;
  /** Spool directory (DATA_DIR/.storage). */
  workDir: string;
  nodeId: string;
  leaseTtlMs: number;
  takeover: boolean;
  /** DURABILITY=sync: every catalog write returns only once its WAL is archived. */
  sync: boolean;
  /** WAL_SHIP_INTERVAL: a write's WAL is shipped within half of it. */
  shipIntervalMs: number;
  expect?: PgDataIdentity;
  logger: Logger;
  /**
   * Another node took the catalog's lease: from now on this node must write nothing to the archive
   * (its retention could delete what the new holder's catalog references). The server stops.
   */
  onLost?: (() => void) | undefined;
}

interface Piece {
  key: string;
  seq: bigint;
  start: bigint;
  end: bigint;
  sha256: string;
}
interface Base {
  key: string;
  seq: bigint;
  size: number;
  sha256: string;
}
interface Generation {
  claim: string;
  bases: Base[];
  pieces: Piece[];
}

/** The catalog's objects in the archive, by generation (oldest first). */
export async function listCatalogData(archive: ArchiveStore): Promise<Generation[]> {
  const byClaim = new Map<string, Generation>();
  for (const o of await archive.list(DATA)) {
    const [claim, name] = o.key.slice(DATA.length).split('/');
    if (!claim || !name) continue;
    const gen = byClaim.get(claim) ?? { claim, bases: [], pieces: [] };
    byClaim.set(claim, gen);
    const b = BASE_NAME.exec(name);
    if (b)
      gen.bases.push({ key: o.key, seq: BigInt(`0x${b[1]}`), size: Number(b[2]), sha256: b[3] as string });
    const w = WAL_NAME.exec(name);
    if (w)
      gen.pieces.push({
        key: o.key,
        seq: BigInt(`0x${w[1]}`),
        start: BigInt(`0x${w[2]}`),
        end: BigInt(`0x${w[3]}`),
        sha256: w[4] as string,
      });
  }
  const bySeq = <T extends { seq: bigint }>(a: T, b: T) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0);
  const gens = [...byClaim.values()].sort((a, b) => (a.claim < b.claim ? -1 : 1));
  for (const g of gens) {
    g.bases.sort(bySeq);
    g.pieces.sort(bySeq);
  }
  return gens;
}

async function getBytes(archive: ArchiveStore, key: string, sha256: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await archive.get(key)) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  if (createHash('sha256').update(bytes).digest('hex') !== sha256)
    throw new Error(`catalog archive object ${key} does not match its checksum`);
  return bytes;
}

/** Rebuilds the catalog at `dir` (must not exist) from a generation's newest base and its WAL. */
async function restoreCatalog(
  opts: ArchivedCatalogOptions,
  gen: Generation,
  dir: string,
): Promise<{ pieces: number }> {
  const base = gen.bases.at(-1);
  if (!base) throw new Error(`catalog generation ${gen.claim} has no base`);
  const staged = await stageTarball(await opts.archive.get(base.key), dir, {
    maxBytes: NO_SIZE_LIMIT,
    sha256: base.sha256,
    ...(opts.expect ? { expect: opts.expect } : {}),
  });
  try {
    let end: bigint | undefined;
    let pieces = 0;
    const wal = await walLayout(staged.dir);
    for (const piece of gen.pieces.filter((p) => p.seq > base.seq)) {
      if (end !== undefined && piece.start > end) {
        opts.logger.error(
          { at: end.toString(16), next: piece.start.toString(16) },
          'catalog WAL gap; replay stops',
        );
        break;
      }
      await writeWal(wal, piece.start, await getBytes(opts.archive, piece.key, piece.sha256));
      if (end === undefined || piece.end > end) end = piece.end;
      pieces++;
    }
    if (pieces > 0) await requireWalReplay(staged.dir);
    await installDir(staged.dir, dir);
    return { pieces };
  } catch (err) {
    await rm(staged.dir, { recursive: true, force: true });
    throw err;
  }
}

/** Ships the catalog's WAL and takes its bases, one operation at a time, into one generation. */
class CatalogShipper {
  private chain: Promise<unknown> = Promise.resolve();
  private shipped = 0n;
  private sinceBase = 0;
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  private closed = false;
  private readonly bases: Base[] = [];
  private readonly pieces: Piece[] = [];

  constructor(
    private readonly opts: ArchivedCatalogOptions,
    private readonly pg: EmbeddedPglite,
    private readonly dir: string,
    private readonly lease: CatalogLease,
  ) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private prefix(): string {
    return `${DATA}${this.lease.claim.name}/`;
  }

  /** A write happened: ship soon (async) or now (sync). */
  afterWrite = async (): Promise<void> => {
    if (this.closed) return;
    if (this.opts.sync) {
      await this.flush();
      return;
    }
    this.timer ??= setTimeout(
      () => {
        this.timer = undefined;
        this.flush().catch(() => this.afterWrite());
      },
      Math.max(5, Math.floor(this.opts.shipIntervalMs / 2)),
    );
    this.timer.unref();
  };

  /** Ships the WAL written so far. */
  flush(): Promise<void> {
    return this.serial(() => this.ship());
  }

  private async ship(): Promise<void> {
    if (this.lease.lost) throw new Error('the embedded catalog lease was lost to another node; not archived');
    const to = await this.pg.walLsn();
    if (to <= this.shipped) return;
    try {
      const wal = await walLayout(this.dir);
      let start = this.shipped > 0n ? ((this.shipped - 1n) / WAL_PAGE) * WAL_PAGE : 0n;
      while (start < to) {
        const end = to - start > MAX_PIECE ? start + MAX_PIECE : to;
        const bytes = await readWal(wal, start, end);
        const sha256 = createHash('sha256').update(bytes).digest('hex');
        const seq = nextSeq();
        const key = `${this.prefix()}wal-${hex16(seq)}-${hex16(start)}-${hex16(end)}-${sha256}`;
        await this.opts.archive.put(key, () => Readable.from([bytes]), bytes.length);
        this.pieces.push({ key, seq, start, end, sha256 });
        this.sinceBase += bytes.length;
        this.shipped = end;
        start = end;
      }
      if (this.failing) this.opts.logger.info('catalog WAL shipping works again');
      this.failing = false;
    } catch (err) {
      if (!this.failing)
        this.opts.logger.warn({ err: describeError(err) }, 'catalog WAL shipping failed; retrying');
      this.failing = true;
      throw err;
    }
    if (this.sinceBase >= BASE_EVERY_WAL_BYTES) await this.takeBase();
  }

  /** A base backup of the catalog into this generation (the first one before the node serves). */
  base(): Promise<void> {
    return this.serial(() => this.takeBase());
  }

  private async takeBase(): Promise<void> {
    const started = performance.now();
    await mkdir(this.opts.workDir, { recursive: true });
    const tag = randomBytes(6).toString('hex');
    const staged = path.join(this.opts.workDir, `_catalog.${tag}.stage`);
    const spool = path.join(this.opts.workDir, `_catalog.${tag}.tar.gz`);
    try {
      await this.pg.checkpoint();
      // Everything before this position is in the copy: pieces after the base start here.
      const lsn = await this.pg.walLsn();
      const seq = nextSeq();
      await this.pg.exclusive(() => copyTree(this.dir, staged));
      const packed = await packToFile(staged, spool, {
        gzipLevel: 6,
        ...(this.opts.expect ? { expect: this.opts.expect } : {}),
      });
      const key = `${this.prefix()}base-${hex16(seq)}-${packed.size}-${packed.sha256}.tar.gz`;
      await this.opts.archive.put(key, () => createReadStream(spool), packed.size);
      const stored = await this.opts.archive.head(key);
      if (stored?.size !== packed.size) throw new Error(`catalog base ${key} was not stored whole`);
      if (lsn > this.shipped) this.shipped = lsn;
      this.bases.push({ key, seq, size: packed.size, sha256: packed.sha256 });
      this.sinceBase = 0;
      this.opts.logger.info(
        { bytes: packed.size, ms: Math.round(performance.now() - started) },
        'catalog base backup stored',
      );
      await this.retain();
    } finally {
      await rm(spool, { force: true });
      await rm(staged, { recursive: true, force: true });
    }
  }

  /** Keeps the two newest bases of this generation and the WAL read after the older one. */
  private async retain(): Promise<void> {
    const keep = this.bases.at(-2);
    if (!keep) return;
    const drop = [
      ...this.bases.filter((b) => b.seq < keep.seq),
      ...this.pieces.filter((p) => p.seq < keep.seq),
    ];
    for (const o of drop) await this.opts.archive.delete(o.key).catch(() => undefined);
    this.bases.splice(0, this.bases.indexOf(keep));
    const firstKept = this.pieces.findIndex((p) => p.seq >= keep.seq);
    this.pieces.splice(0, firstKept < 0 ? this.pieces.length : firstKept);
  }

  /** Deletes the objects of older generations: this one's first base supersedes them. */
  async forgetOlder(): Promise<void> {
    for (const gen of await listCatalogData(this.opts.archive)) {
      if (gen.claim >= this.lease.claim.name) continue;
      for (const o of [...gen.pieces, ...gen.bases]) await this.opts.archive.delete(o.key);
    }
    await this.lease.forgetOlder();
  }

  /** Ships what is left; the lease is released by the caller. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush().catch((err: unknown) =>
      this.opts.logger.error({ err: describeError(err) }, 'catalog: the last WAL could not be archived'),
    );
  }
}

interface LocalState {
  archive: string;
  claim: string;
}

async function readLocalState(file: string): Promise<LocalState | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as LocalState;
  } catch {
    return undefined;
  }
}

async function writeLocalState(file: string, state: LocalState): Promise<void> {
  const tmp = `${file}.tmp`;
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(JSON.stringify(state));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
  await syncDir(path.dirname(file));
}

/**
 * Opens the embedded catalog archived to `opts.archive`: takes the writer lease, restores the
 * catalog from the archive when the local copy is missing or stale, stores a first base backup
 * into this node's generation, and returns a catalog whose writes are shipped.
 */
export async function openArchivedCatalog(opts: ArchivedCatalogOptions): Promise<Catalog> {
  const dir = path.join(opts.dataDir, '_catalog');
  const stateFile = path.join(opts.dataDir, '_catalog.archive.json');
  const state = await readLocalState(stateFile);
  const mine = state?.archive === opts.archive.describe() ? state.claim : undefined;
  const lease = await CatalogLease.acquire({
    archive: opts.archive,
    nodeId: opts.nodeId,
    ttlMs: opts.leaseTtlMs,
    takeover: opts.takeover,
    previous: mine,
    logger: opts.logger,
    onLost: () => opts.onLost?.(),
  });
  let pg: EmbeddedPglite | undefined;
  try {
    const newest = (await listCatalogData(opts.archive)).filter((g) => g.bases.length > 0).at(-1);
    const local = await hasPgVersion(dir);
    if (newest && (!local || newest.claim !== mine)) {
      if (local) {
        // Written by another node since (or never archived from here): the archive's is newer.
        const aside = `${dir}.stale-${Date.now()}`;
        await rename(dir, aside);
        opts.logger.warn({ aside }, 'the local catalog is older than the archive; kept aside, restoring');
      }
      const started = performance.now();
      const { pieces } = await restoreCatalog(opts, newest, dir);
      opts.logger.info(
        { generation: newest.claim, walPieces: pieces, ms: Math.round(performance.now() - started) },
        'catalog restored from the archive',
      );
    }
    pg = await openEmbeddedPglite({ dir, templateDir: opts.templateDir });
    const shipper = new CatalogShipper(opts, pg, dir, lease);
    await shipper.base();
    // Only now: until this generation has a base, the local copy continues the previous one.
    await writeLocalState(stateFile, { archive: opts.archive.describe(), claim: lease.claim.name });
    await shipper
      .forgetOlder()
      .catch((err: unknown) =>
        opts.logger.warn({ err: describeError(err) }, 'catalog: could not delete older generations'),
      );
    const raw = pg.client;
    const client: SqlClient = {
      query: async <Row>(sql: string, params?: unknown[]) => {
        const result = await raw.query<Row>(sql, params);
        await shipper.afterWrite();
        return result;
      },
      transaction: async <T>(fn: (tx: Pick<SqlClient, 'query'>) => Promise<T>) => {
        const result = await raw.transaction(fn);
        await shipper.afterWrite();
        return result;
      },
      close: async () => {
        await shipper.close();
        await lease.release();
        await raw.close();
      },
    };
    return await openSqlCatalog(client);
  } catch (err) {
    await pg?.client.close().catch(() => undefined);
    await lease.release();
    throw err;
  }
}
