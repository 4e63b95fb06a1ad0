import os from 'node:os';
import { type PgbenchRun, runLength, runPgbench } from './pgbench-runner.js';
import type { DatabaseSource, SystemKind, SystemUnderTest, Target } from './systems/index.js';
import { cpuSnapshot, errorMessage, type Log, mean, otherCpuCores, percentile, round } from './tools.js';
import type { PgbenchRow, QueryMode, Workload } from './types.js';

/**
 * pgbench TPC-B (scale 1) and select-only (-S), at -c 1 and -c 8, in every query mode, against
 * one database per system. Latency average and p99 come from pgbench's per-transaction log.
 */

export interface PgbenchPlanItem {
  workload: Workload;
  mode: QueryMode;
  clients: number;
}

const MODES: readonly QueryMode[] = ['simple', 'extended', 'prepared'];

export function pgbenchPlan(quick: boolean): PgbenchPlanItem[] {
  if (quick) {
    return [
      { workload: 'tpcb', mode: 'simple', clients: 1 },
      { workload: 'tpcb', mode: 'simple', clients: 8 },
      { workload: 'tpcb', mode: 'extended', clients: 1 },
    ];
  }
  const plan: PgbenchPlanItem[] = [];
  for (const workload of ['tpcb', 'select-only'] as const) {
    for (const mode of MODES) {
      for (const clients of [1, 8]) plan.push({ workload, mode, clients });
    }
  }
  return plan;
}

/** pgbench threads: one per client up to the number of cores. */
export function threadsFor(clients: number): number {
  return Math.max(1, Math.min(clients, os.cpus().length));
}

/** Creates pgbench's tables at scale 1, generating rows server-side (pglite-socket has no COPY FROM STDIN). */
export async function initPgbench(pgbench: string, target: Target): Promise<void> {
  const run = await runPgbench(pgbench, ['-i', '-s', '1', '-I', 'dtGvp', '-q', target.conninfo], {
    env: target.env,
    timeoutMs: 300_000,
  });
  if (run.code !== 0) throw new Error(`pgbench -i failed: ${run.error ?? `exit ${run.code}`}`);
}

/** One row's numbers from a pgbench run (whether it passed or not). */
export function rowFromRun(
  run: PgbenchRun,
): Omit<PgbenchRow, 'system' | 'workload' | 'mode' | 'clients' | 'threads' | 'seconds'> {
  const latencies = run.transactions.map((t) => t.latencyUs / 1000);
  const ran = run.code === 0 && !run.aborted && !run.timedOut;
  const ok = ran && (run.processed ?? 0) > 0;
  return {
    status: ok ? 'ok' : 'failed',
    ...(ok ? {} : { error: ran ? 'no transaction completed' : (run.error ?? 'failed') }),
    tps: round(run.tps, 1),
    latencyAvgMs: round(mean(latencies) ?? run.latencyAvgMs, 3),
    latencyP99Ms: round(percentile(latencies, 99), 3),
    transactions: run.processed,
    failedTransactions: run.failed,
    abortedClients: run.abortedClients,
  };
}

export async function runPgbenchRows(
  system: SystemUnderTest,
  ctx: { pgbench: string; database: DatabaseSource; seconds: number; quick: boolean; log: Log },
): Promise<PgbenchRow[]> {
  const plan = pgbenchPlan(ctx.quick);
  const rows: PgbenchRow[] = [];
  const base = (item: PgbenchPlanItem) => ({
    system: system.kind,
    ...item,
    threads: threadsFor(item.clients),
    seconds: ctx.seconds,
  });
  let target: Target;
  try {
    target = await ctx.database('bench', { pgbenchTables: true });
  } catch (err) {
    const error = `setup failed: ${errorMessage(err)}`;
    ctx.log(`[pgbench] ${system.kind}: ${error}`);
    return plan.map((item) => ({ ...base(item), status: 'failed', error }));
  }
  let broken: string | undefined;
  for (const item of plan) {
    if (broken) {
      rows.push({ ...base(item), status: 'failed', error: broken });
      continue;
    }
    const args = [
      '-n',
      ...['-c', String(item.clients), '-j', String(threadsFor(item.clients))],
      ...runLength(ctx.quick, ctx.seconds),
      ...['-M', item.mode],
      ...(item.workload === 'select-only' ? ['-S'] : []),
      target.conninfo,
    ];
    const cpu = cpuSnapshot();
    const run = await runPgbench(ctx.pgbench, args, {
      env: target.env,
      timeoutMs: (ctx.seconds + 60) * 1000,
      perTransactionLog: true,
    });
    const row: PgbenchRow = {
      ...base(item),
      ...rowFromRun(run),
      otherCpuCores: otherCpuCores(cpu, cpuSnapshot()),
    };
    rows.push(row);
    ctx.log(`[pgbench] ${describe(system.kind, item)}: ${summary(row)}`);
    if (row.status !== 'ok') {
      try {
        await system.recover(target);
      } catch (err) {
        broken = errorMessage(err);
      }
    }
  }
  return rows;
}

function describe(kind: SystemKind, item: PgbenchPlanItem): string {
  return `${kind} ${item.workload} -M ${item.mode} -c ${item.clients}`;
}

function summary(row: PgbenchRow): string {
  const numbers = `tps=${row.tps ?? '-'} avg=${row.latencyAvgMs ?? '-'}ms p99=${row.latencyP99Ms ?? '-'}ms failed=${row.failedTransactions ?? '-'}`;
  return row.status === 'ok' ? numbers : `FAILED (${row.error}) ${numbers}`;
}
