import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { diskUsage } from '../src/databases/local-cache.js';
import { table } from './markdown.js';
import { startGateway } from './systems/gateway.js';
import type { Target } from './systems/types.js';
import { errorMessage, type Log, percentile, round } from './tools.js';

/**
 * `npm run bench -- --only local-cache`: what a database costs on local disk while closed, and what
 * it costs to open once its local copy was dropped (LOCAL_EVICT_AFTER / LOCAL_DISK_MAX) or lost:
 * the time from a new connection to the first query's answer, fetching the newest base from an
 * s3rver archive (plus its shipped WAL), for an empty database and a pgbench scale-1 one.
 */

export const LOCAL_CACHE_BENCH = 'local-cache';

export interface LocalCacheRow {
  database: string;
  /** Bytes on disk of the closed database's directory (du). */
  diskBytes?: number;
  /** Size of its newest base in the archive. */
  baseBytes?: number;
  /** Time to the first query's answer, local copy present (p50, ms). */
  openLocalMs?: number;
  /** The same after the local copy was dropped: fetched from the archive (p50 and max, ms). */
  openEvictedP50Ms?: number;
  openEvictedMaxMs?: number;
  /** Dropped copies opened one at a time once the node's spare copies were ready again (p50, ms). */
  openEvictedRestedP50Ms?: number;
  /** In those runs, the first write after the first query: it waits for the fetched copy's flush (p50, ms). */
  firstWriteRestedP50Ms?: number;
  runs: number;
  error?: string;
}

export interface LocalCacheResults {
  description: string;
  rows: LocalCacheRow[];
}

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: Record<string, unknown>) => S3rverInstance;

/** Time to the first query's answer on a new connection; with `write`, also the time of a write after it. */
async function firstQueryMs(
  config: pg.ClientConfig,
  write = false,
): Promise<{ query: number; write: number }> {
  const started = performance.now();
  const c = new pg.Client(config);
  await c.connect();
  try {
    await c.query('select 1');
    const answered = performance.now();
    // Takes a transaction id, so its commit writes WAL, without changing the database's contents.
    if (write) await c.query('select pg_current_xact_id()');
    return { query: answered - started, write: performance.now() - answered };
  } finally {
    await c.end();
  }
}

/** Waits (up to 20 s) until the node's spare copies (SPARE_DATABASES, 2 here) are ready again. */
async function sparesReady(dataDir: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const names = await readdir(path.join(dataDir, '_spare')).catch(() => [] as string[]);
    if (names.filter((n) => !n.includes('.tmp-')).length >= SPARES) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
const SPARES = 2;

export async function runLocalCacheBench(opts: { runs?: number; log: Log }): Promise<LocalCacheResults> {
  const rows: LocalCacheRow[] = [];
  // FSYNC=on (the default) flushes what a fetch writes; off shows what that flush costs.
  for (const fsync of ['on', 'off'] as const) rows.push(...(await measureGateway(fsync, opts)));
  return {
    description:
      'in-process gateway with an s3rver archive on this machine (DURABILITY=async, SPARE_DATABASES=2), FSYNC=on then off; first query = new TLS connection + SCRAM + `select 1`. "dropped": the copy dropped and opened again about once a second, so spare copies may not be ready; "spares ready": one at a time once they are; "first write": `select pg_current_xact_id()` right after, which waits for the fetched copy\'s flush with FSYNC=on',
    rows,
  };
}

async function measureGateway(
  fsync: 'on' | 'off',
  opts: { runs?: number; log: Log },
): Promise<LocalCacheRow[]> {
  const runs = opts.runs ?? 7;
  const root = await mkdtemp(path.join(tmpdir(), 'bench-local-cache-'));
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;
  const s3 = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: path.join(root, 's3'),
    configureBuckets: [{ name: 'bench' }],
  });
  const { port } = await s3.run();
  const dataDir = path.join(root, 'data');
  const gateway = await startGateway({
    env: {
      DATA_DIR: dataDir,
      ARCHIVE_URL: 's3://bench/dbs',
      AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
      DURABILITY: 'async',
      FSYNC: fsync,
      SPARE_DATABASES: String(SPARES),
    },
  });
  const { server } = gateway;
  const rows: LocalCacheRow[] = [];
  const evict = async (id: string) => {
    await server.registry.close(id);
    await server.registry.whileUnused(id, async () => {
      const aside = path.join(dataDir, `.${id}.old-000000000000`);
      await rename(path.join(dataDir, id), aside);
      await rm(aside, { recursive: true, force: true });
    });
  };
  const measure = async (label: string, target: Target, prepare: () => Promise<void>) => {
    const row: LocalCacheRow = { database: `${label}, FSYNC=${fsync}`, runs };
    try {
      await prepare();
      await server.registry.close(target.name);
      row.diskBytes = await diskUsage(path.join(dataDir, target.name));
      row.baseBytes = (await server.catalog.listVersions(target.name))[0]?.sizeBytes;
      const local: number[] = [];
      const evicted: number[] = [];
      for (let i = 0; i < runs; i++) {
        await server.registry.close(target.name);
        local.push((await firstQueryMs(target.pgConfig)).query);
        await evict(target.name);
        evicted.push((await firstQueryMs(target.pgConfig)).query);
      }
      row.openLocalMs = round(percentile(local, 50), 0);
      row.openEvictedP50Ms = round(percentile(evicted, 50), 0);
      row.openEvictedMaxMs = round(Math.max(...evicted), 0);
      // One at a time: an evicted open on a node whose background work (spare copies) is done.
      const rested: { query: number; write: number }[] = [];
      for (let i = 0; i < runs; i++) {
        await server.registry.close(target.name);
        await evict(target.name);
        await sparesReady(dataDir);
        rested.push(await firstQueryMs(target.pgConfig, true));
      }
      row.openEvictedRestedP50Ms = round(
        percentile(
          rested.map((r) => r.query),
          50,
        ),
        0,
      );
      row.firstWriteRestedP50Ms = round(
        percentile(
          rested.map((r) => r.write),
          50,
        ),
        0,
      );
      opts.log(`local-cache: ${row.database}: evicted open p50 ${row.openEvictedP50Ms} ms`);
    } catch (err) {
      row.error = errorMessage(err);
    }
    rows.push(row);
  };
  try {
    const empty = await gateway.createDatabase('cache-empty');
    await measure('empty (created, touched once)', empty, async () => {
      await firstQueryMs(empty.pgConfig);
    });
    const scale1 = await gateway.createDatabase('cache-pgbench');
    await measure('pgbench -i -s 1', scale1, async () => {
      await promisify(execFile)('pgbench', ['-i', '-s', '1', '-q', scale1.conninfo], {
        env: { ...process.env, ...scale1.env },
      });
    });
  } finally {
    await gateway.stop();
    await s3.close();
    await rm(root, { recursive: true, force: true });
  }
  return rows;
}

const mb = (n: number | undefined) => {
  if (n === undefined) return '—';
  return n < 1024 * 1024 ? `${Math.round(n / 1024)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
};
const ms = (n: number | undefined) => (n === undefined ? '—' : `${n} ms`);

export function renderLocalCacheReport(results: LocalCacheResults): string {
  return [
    '### Local copies as a cache: disk per closed database, open time once dropped\n',
    `${results.description}\n`,
    table(
      [
        'database',
        'disk (closed)',
        'base in archive',
        'first query, local',
        'first query, dropped (p50)',
        'dropped (max)',
        'dropped, spares ready (p50)',
        'then first write (p50)',
      ],
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      results.rows.map((r) =>
        r.error
          ? [r.database, `**failed**: ${r.error}`, '', '', '', '', '', '']
          : [
              r.database,
              mb(r.diskBytes),
              mb(r.baseBytes),
              ms(r.openLocalMs),
              ms(r.openEvictedP50Ms),
              ms(r.openEvictedMaxMs),
              ms(r.openEvictedRestedP50Ms),
              ms(r.firstWriteRestedP50Ms),
            ],
      ),
    ),
  ].join('\n');
}
