import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { runPgbench, type Transaction } from './pgbench-runner.js';
import type { DatabaseSource, SystemUnderTest } from './systems/index.js';
import { cpuSnapshot, errorMessage, type Log, otherCpuCores, percentile, round, sleep } from './tools.js';
import type { IsolationRow } from './types.js';

/**
 * Does a long query on database A slow down database B? pgbench (its own process, one client)
 * sends `select 1` to B on a fixed schedule (`-R`, open loop) and logs every latency, measured
 * from the time the query was due, so queries that had to wait count the wait. Meanwhile a
 * client runs `select pg_sleep(N)` on A. Reported: B's queries due while A's query ran.
 */

/** How long B runs before A's query starts, so there is a baseline. */
const LEAD_MS = 1500;
/** pgbench's -T is A's query plus this: the lead before it and time after it to drain. */
const TAIL_S = 3;
/** B's schedule: `select 1` per second (pgbench -R). */
const RATE = 200;

export async function runIsolation(
  system: SystemUnderTest,
  ctx: { pgbench: string; database: DatabaseSource; longQuerySeconds: number; log: Log },
): Promise<IsolationRow> {
  const longQuerySeconds = ctx.longQuerySeconds;
  const base = { system: system.kind, longQuerySeconds };
  const dir = await mkdtemp(path.join(tmpdir(), 'bench-isolation-'));
  let connA: pg.Client | undefined;
  try {
    const a = await ctx.database('bench');
    const b = await ctx.database('bench2');
    const script = path.join(dir, 'select1.sql');
    await writeFile(script, 'select 1;\n');

    // Both databases open and warm before the clock starts.
    const warmB = new pg.Client(b.pgConfig);
    warmB.on('error', () => undefined);
    await warmB.connect();
    await warmB.query('select 1');
    await warmB.end();
    connA = new pg.Client(a.pgConfig);
    connA.on('error', () => undefined);
    await connA.connect();
    await connA.query('select 1');

    const cpu = cpuSnapshot();
    const bRun = runPgbench(
      ctx.pgbench,
      [
        ...['-n', '-c', '1', '-R', String(RATE), '-T', String(longQuerySeconds + TAIL_S)],
        ...['-M', 'simple', '-f', script, b.conninfo],
      ],
      { env: b.env, timeoutMs: (longQuerySeconds + 70) * 1000, perTransactionLog: true },
    );
    await sleep(LEAD_MS);
    const aStartUs = Date.now() * 1000;
    let aError: string | undefined;
    await connA.query(`select pg_sleep(${longQuerySeconds})`).catch((err: unknown) => {
      aError = errorMessage(err);
    });
    const aEndUs = Date.now() * 1000;
    await connA.end().catch(() => undefined);
    connA = undefined;
    const run = await bRun;
    const otherCpu = otherCpuCores(cpu, cpuSnapshot());

    // With -R, a transaction's latency runs from when it was due, so end - latency is its due time.
    const due = (t: Transaction) => t.endUs - t.latencyUs;
    const issued = run.transactions.filter((t) => due(t) >= aStartUs && due(t) <= aEndUs);
    const completedDuring = issued.filter((t) => t.endUs <= aEndUs);
    const before = run.transactions.filter((t) => due(t) < aStartUs);
    const during = issued.map((t) => t.latencyUs / 1000);
    const failed = run.code !== 0 || run.aborted || run.timedOut || aError !== undefined;
    const row: IsolationRow = {
      ...base,
      status: failed ? 'failed' : 'ok',
      ...(failed ? { error: aError ? `query on A failed: ${aError}` : (run.error ?? 'pgbench failed') } : {}),
      issuedDuring: issued.length,
      completedDuring: completedDuring.length,
      p50Ms: round(percentile(during, 50), 3),
      p99Ms: round(percentile(during, 99), 3),
      maxMs: round(during.length ? during.reduce((m, v) => Math.max(m, v), 0) : undefined, 3),
      otherCpuCores: otherCpu,
      baselineP50Ms: round(
        percentile(
          before.map((t) => t.latencyUs / 1000),
          50,
        ),
        3,
      ),
    };
    ctx.log(
      `[isolation] ${system.kind}: ${row.completedDuring} of ${row.issuedDuring} select 1 due on B during A's ${longQuerySeconds} s query completed before it ended; ` +
        `p50=${row.p50Ms}ms p99=${row.p99Ms}ms max=${row.maxMs}ms (baseline p50 ${row.baselineP50Ms}ms)${failed ? ` FAILED: ${row.error}` : ''}`,
    );
    return row;
  } catch (err) {
    const error = errorMessage(err);
    ctx.log(`[isolation] ${system.kind}: FAILED ${error}`);
    return { ...base, status: 'failed', error };
  } finally {
    await connA?.end().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}
