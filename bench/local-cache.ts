import { execFile } from 'node:child_process';
import { mkdtemp, rename, rm } from 'node:fs/promises';
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

async function firstQueryMs(config: pg.ClientConfig): Promise<number> {
  const started = performance.now();
  const c = new pg.Client(config);
  await c.connect();
  try {
    await c.query('select 1');
    return performance.now() - started;
  } finally {
    await c.end();
  }
}

export async function runLocalCacheBench(opts: { runs?: number; log: Log }): Promise<LocalCacheResults> {
  const rows: LocalCacheRow[] = [];
  // FSYNC=on (the default) flushes what a fetch writes; off shows what that flush costs.
  for (const fsync of ['on', 'off'] as const) rows.push(...(await measureGateway(fsync, opts)));
  return {
    description:
      'in-process gateway with an s3rver archive on this machine (DURABILITY=async), FSYNC=on then off; first query = new TLS connection + SCRAM + `select 1`',
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
        local.push(await firstQueryMs(target.pgConfig));
        await evict(target.name);
        evicted.push(await firstQueryMs(target.pgConfig));
      }
      row.openLocalMs = round(percentile(local, 50), 0);
      row.openEvictedP50Ms = round(percentile(evicted, 50), 0);
      row.openEvictedMaxMs = round(Math.max(...evicted), 0);
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
      ],
      ['l', 'r', 'r', 'r', 'r', 'r'],
      results.rows.map((r) =>
        r.error
          ? [r.database, `**failed**: ${r.error}`, '', '', '', '']
          : [
              r.database,
              mb(r.diskBytes),
              mb(r.baseBytes),
              ms(r.openLocalMs),
              ms(r.openEvictedP50Ms),
              ms(r.openEvictedMaxMs),
            ],
      ),
    ),
  ].join('\n');
}
