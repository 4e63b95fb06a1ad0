import { threadsFor } from './pgbench.js';
import { type PgbenchRun, runLength, runPgbench } from './pgbench-runner.js';
import type { DatabaseSource, SystemUnderTest, Target } from './systems/index.js';
import { cpuSnapshot, errorMessage, type Log, otherCpuCores, round } from './tools.js';
import type { ScaleRow } from './types.js';

/**
 * Scale-out on cores: TPC-B with N clients on one busy database, then two pgbench processes with
 * N clients each on two databases at the same time. A server that uses more than one core for
 * separate databases gets close to 2x aggregate TPS (until pgbench itself needs the cores).
 */

export const CLIENTS_PER_DB = 4;

function ok(run: PgbenchRun): boolean {
  return run.code === 0 && !run.aborted && !run.timedOut && run.tps !== undefined;
}

export async function runScale(
  system: SystemUnderTest,
  ctx: { pgbench: string; database: DatabaseSource; seconds: number; quick: boolean; log: Log },
): Promise<ScaleRow> {
  const base = { system: system.kind, clientsPerDb: CLIENTS_PER_DB, seconds: ctx.seconds };
  const bench = (target: Target) =>
    runPgbench(
      ctx.pgbench,
      [
        '-n',
        ...['-c', String(CLIENTS_PER_DB), '-j', String(threadsFor(CLIENTS_PER_DB))],
        ...runLength(ctx.quick, ctx.seconds),
        ...['-M', 'simple', target.conninfo],
      ],
      { env: target.env, timeoutMs: (ctx.seconds + 60) * 1000 },
    );
  try {
    const a = await ctx.database('bench', { pgbenchTables: true });
    const b = await ctx.database('bench2', { pgbenchTables: true });
    const cpu = cpuSnapshot();
    const one = await bench(a);
    const two = await Promise.all([bench(a), bench(b)]);
    const otherCpu = otherCpuCores(cpu, cpuSnapshot());
    const failed = [one, ...two].find((r) => !ok(r));
    const oneDbTps = round(one.tps, 1);
    const each = two.map((r) => round(r.tps, 1) ?? 0);
    const twoDbTps = two.every((r) => r.tps !== undefined)
      ? round(
          each.reduce((sum, v) => sum + v, 0),
          1,
        )
      : undefined;
    const row: ScaleRow = {
      ...base,
      status: failed ? 'failed' : 'ok',
      ...(failed ? { error: failed.error ?? 'pgbench failed' } : {}),
      oneDbTps,
      twoDbTps,
      twoDbTpsEach: each,
      otherCpuCores: otherCpu,
      ratio: oneDbTps && twoDbTps !== undefined ? round(twoDbTps / oneDbTps, 2) : undefined,
    };
    ctx.log(
      `[scale] ${system.kind}: 1 db ${row.oneDbTps} tps, 2 dbs ${row.twoDbTps} tps (${each.join(' + ')}), ratio ${row.ratio}` +
        (failed ? ` FAILED: ${row.error}` : ''),
    );
    return row;
  } catch (err) {
    const error = errorMessage(err);
    ctx.log(`[scale] ${system.kind}: FAILED ${error}`);
    return { ...base, status: 'failed', error };
  }
}
