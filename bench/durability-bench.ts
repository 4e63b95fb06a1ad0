import { appendFile } from 'node:fs/promises';
import pg from 'pg';
import { parseLsn } from '../src/databases/wal-shipping.js';
import { startS3, type TestS3 } from '../test/helpers/s3.js';
import { initPgbench, rowFromRun, threadsFor } from './pgbench.js';
import { runLength, runPgbench } from './pgbench-runner.js';
import { type GatewaySystem, startGateway } from './systems/gateway.js';
import { cpuSnapshot, errorMessage, findTools, type Log, otherCpuCores, sleep } from './tools.js';
import type { PgbenchRow } from './types.js';

/**
 * What durability costs (issue 14): pgbench TPC-B `-M prepared` at 1 and 8 clients against the
 * gateway with DURABILITY=local|async|sync x FSYNC=off|on, side by side in one run, every one with
 * s3rver as the archive; and how long a restore takes that replays 64 MB of WAL on top of its
 * base (the base is the database as created: BASE_BACKUP_WAL is raised so no base comes between).
 */

export const DURABILITY_BENCH = 'durability';

const DURABILITIES = ['local', 'async', 'sync'] as const;
const FSYNCS = ['off', 'on'] as const;
const RESTORE_WAL_BYTES = 64n * 1024n * 1024n;

export interface DurabilityRow {
  durability: (typeof DURABILITIES)[number];
  fsync: (typeof FSYNCS)[number];
  clients: number;
  status: PgbenchRow['status'];
  error?: string;
  tps?: number | undefined;
  latencyAvgMs?: number | undefined;
  latencyP99Ms?: number | undefined;
  otherCpuCores?: number | undefined;
}

export interface DurabilityBenchResults {
  seconds: number;
  rows: DurabilityRow[];
  restore?: { walMiB: number; pieces: number; restoreMs: number; firstQueryMs: number } | { error: string };
}

function archiveEnv(s3: TestS3, prefix: string): Record<string, string> {
  return s3.env(prefix, { direct: true });
}

export async function runDurabilityBench(opts: {
  seconds: number;
  quick: boolean;
  log: Log;
}): Promise<DurabilityBenchResults> {
  const results: DurabilityBenchResults = { seconds: opts.seconds, rows: [] };
  const { pgbench } = findTools();
  const s3 = await startS3();
  try {
    for (const fsync of FSYNCS) {
      for (const durability of DURABILITIES) {
        const rows = await pgbenchRows(s3, pgbench, durability, fsync, opts);
        results.rows.push(...rows);
      }
    }
    results.restore = await restoreRow(s3, opts.log).catch((err: unknown) => ({ error: errorMessage(err) }));
  } finally {
    await s3.close();
  }
  return results;
}

async function pgbenchRows(
  s3: TestS3,
  pgbench: string | undefined,
  durability: DurabilityRow['durability'],
  fsync: DurabilityRow['fsync'],
  opts: { seconds: number; quick: boolean; log: Log },
): Promise<DurabilityRow[]> {
  const failed = (clients: number, error: string): DurabilityRow => ({
    durability,
    fsync,
    clients,
    status: 'failed' as const,
    error,
  });
  if (!pgbench) return [1, 8].map((c) => failed(c, 'pgbench not found'));
  let gateway: GatewaySystem | undefined;
  const rows: DurabilityRow[] = [];
  try {
    gateway = await startGateway({
      env: { ...archiveEnv(s3, `bench-${durability}-${fsync}`), DURABILITY: durability, FSYNC: fsync },
    });
    const target = await gateway.createDatabase('bench');
    await initPgbench(pgbench, target);
    for (const clients of [1, 8]) {
      const cpu = cpuSnapshot();
      const run = await runPgbench(
        pgbench,
        [
          '-n',
          ...['-c', String(clients), '-j', String(threadsFor(clients))],
          ...runLength(opts.quick, opts.seconds),
          ...['-M', 'prepared'],
          target.conninfo,
        ],
        { env: target.env, timeoutMs: (opts.seconds + 60) * 1000, perTransactionLog: true },
      );
      const numbers = rowFromRun(run);
      const row: DurabilityRow = {
        durability,
        fsync,
        clients,
        status: numbers.status,
        ...(numbers.error ? { error: numbers.error } : {}),
        tps: numbers.tps,
        latencyAvgMs: numbers.latencyAvgMs,
        latencyP99Ms: numbers.latencyP99Ms,
        otherCpuCores: otherCpuCores(cpu, cpuSnapshot()),
      };
      opts.log(
        `[durability] ${durability} FSYNC=${fsync} -c ${clients}: tps=${row.tps ?? '-'} avg=${row.latencyAvgMs ?? '-'}ms`,
      );
      rows.push(row);
    }
  } catch (err) {
    const error = errorMessage(err);
    opts.log(`[durability] ${durability} FSYNC=${fsync}: ${error}`);
    for (const clients of [1, 8])
      if (!rows.some((r) => r.clients === clients)) rows.push(failed(clients, error));
  } finally {
    await gateway?.stop();
  }
  return rows;
}

/** A database with 64 MB of WAL shipped after its base, restored to the newest point. */
async function restoreRow(s3: TestS3, log: Log): Promise<NonNullable<DurabilityBenchResults['restore']>> {
  const gateway = await startGateway({
    env: { ...archiveEnv(s3, 'bench-restore'), DURABILITY: 'async', BASE_BACKUP_WAL: '1GB' },
  });
  try {
    const target = await gateway.createDatabase('restored');
    const client = new pg.Client(target.pgConfig);
    await client.connect();
    const lsn = async () =>
      parseLsn((await client.query<{ l: string }>('select pg_current_wal_lsn()::text as l')).rows[0]?.l) ??
      0n;
    try {
      const start = await lsn();
      await client.query('create table filler (n int, pad text)');
      while ((await lsn()) - start < RESTORE_WAL_BYTES)
        await client.query(
          'insert into filler select g, repeat(md5(g::text), 30) from generate_series(1, 5000) g',
        );
      const end = await lsn();
      // Wait until the archive has all of it.
      const catalog = gateway.server.catalog;
      for (let i = 0; i < 600; i++) {
        const shipped = (await catalog.listWal('restored')).reduce(
          (m, r) => (r.endLsn > m ? r.endLsn : m),
          0n,
        );
        if (shipped >= end) break;
        await sleep(200);
      }
      const pieces = (await catalog.listWal('restored')).length;
      await client.end();
      const at = new Date();
      await sleep(50);
      const started = performance.now();
      await gateway.server.manager.restore('restored', undefined, at);
      const restored = performance.now();
      const check = new pg.Client(target.pgConfig);
      await check.connect();
      await check.query('select count(*) from filler');
      const queried = performance.now();
      await check.end();
      const row = {
        walMiB: Math.round(Number(end - start) / 1024 / 1024),
        pieces,
        restoreMs: Math.round(restored - started),
        firstQueryMs: Math.round(queried - restored),
      };
      log(
        `[durability] restore of ${row.walMiB} MiB of WAL: ${row.restoreMs} ms + ${row.firstQueryMs} ms to a query`,
      );
      return row;
    } finally {
      await client.end().catch(() => undefined);
    }
  } finally {
    await gateway.stop();
  }
}

export function renderDurabilityReport(r: DurabilityBenchResults): string {
  const cell = (durability: string, fsync: string, clients: number) => {
    const row = r.rows.find((x) => x.durability === durability && x.fsync === fsync && x.clients === clients);
    if (!row) return '-';
    return row.status === 'ok' ? `${row.tps} tps, ${row.latencyAvgMs} ms` : `failed: ${row.error}`;
  };
  const lines = [
    '## Durability: DURABILITY x FSYNC',
    '',
    `pgbench TPC-B \`-M prepared\`, ${r.seconds} s per run, against this gateway with s3rver (same machine) as the archive; every combination in the same run. Cells: throughput, average latency.`,
    '',
    '| DURABILITY | FSYNC | -c 1 | -c 8 |',
    '|---|---|---|---|',
    ...FSYNCS.flatMap((fsync) =>
      DURABILITIES.map((d) => `| ${d} | ${fsync} | ${cell(d, fsync, 1)} | ${cell(d, fsync, 8)} |`),
    ),
  ];
  const restore = r.restore;
  if (restore && 'error' in restore) lines.push('', `Restore with 64 MB of WAL: failed (${restore.error}).`);
  else if (restore)
    lines.push(
      '',
      `Restore to the newest point of a database whose base is followed by ${restore.walMiB} MiB of shipped WAL (${restore.pieces} pieces): ${restore.restoreMs} ms to rebuild (download + WAL written into pg_wal), then ${restore.firstQueryMs} ms to the first query (open: crash recovery replays the WAL).`,
    );
  return lines.join('\n');
}

export async function appendDurabilityReport(file: string, r: DurabilityBenchResults): Promise<void> {
  await appendFile(file, `\n${renderDurabilityReport(r)}\n`);
}
