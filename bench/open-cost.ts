import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { startPostgres } from './systems/postgres.js';
import {
  cpuSnapshot,
  errorMessage,
  INSTALL_HINT,
  type Log,
  otherCpuCores,
  percentile,
  projectRoot,
  round,
  type Tools,
  trackRunning,
} from './tools.js';
import {
  type OpenCostChildInput,
  type OpenCostChildOutput,
  type OpenCostRow,
  RESULT_PREFIX,
  type RssRow,
} from './types.js';

/**
 * Open cost: time to first query for a new and for an existing closed database, through the
 * gateway and with plain PGlite as the baseline, each measured in a fresh process
 * (open-cost-child.ts) that also reports RSS per open idle database. PostgreSQL is the reference
 * for what "opening" costs a server that keeps every database available.
 */

export interface OpenCostPlan {
  count: number;
  rssCounts: number[];
  initdbCount: number;
}

export function openCostPlan(quick: boolean): OpenCostPlan {
  return quick
    ? { count: 3, rssCounts: [1, 3], initdbCount: 0 }
    : { count: 20, rssCounts: [1, 10, 50], initdbCount: 20 };
}

const CHILD_TIMEOUT_MS = 20 * 60_000;

function runChild(input: OpenCostChildInput): Promise<OpenCostChildOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', path.join(projectRoot, 'bench', 'open-cost-child.ts')],
      {
        cwd: projectRoot,
        env: { ...process.env, BENCH_OPEN_COST: JSON.stringify(input) },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-8000);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    const untrack = trackRunning(async () => {
      child.kill('SIGTERM');
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      untrack();
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
      if (code === 0 && line) {
        resolve(JSON.parse(line.slice(RESULT_PREFIX.length)) as OpenCostChildOutput);
      } else {
        reject(
          new Error(`open-cost child (${input.subject}) exited with ${code ?? signal}: ${stderr.trim()}`),
        );
      }
    });
  });
}

async function firstQuery(config: pg.ClientConfig): Promise<number> {
  const started = performance.now();
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
  } finally {
    await client.end().catch(() => undefined);
  }
  return performance.now() - started;
}

async function postgresReference(binDir: string, count: number): Promise<OpenCostRow[]> {
  const system = await startPostgres(binDir);
  const untrack = trackRunning(() => system.stop());
  try {
    const created: number[] = [];
    const configs: pg.ClientConfig[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      const target = await system.createDatabase(`open${i}`);
      await firstQuery(target.pgConfig);
      created.push(performance.now() - started);
      configs.push(target.pgConfig);
    }
    const existing: number[] = [];
    for (const config of configs) existing.push(await firstQuery(config));
    const row = (kase: OpenCostRow['case'], measures: string, samples: number[]): OpenCostRow => ({
      subject: 'postgres',
      case: kase,
      measures,
      n: samples.length,
      status: 'ok',
      p50Ms: round(percentile(samples, 50), 1),
      p95Ms: round(percentile(samples, 95), 1),
    });
    return [
      row('new database', 'CREATE DATABASE, connect (plaintext, trust), select 1', created),
      row(
        'existing closed database',
        'connect to an existing database (plaintext, trust), select 1',
        existing,
      ),
    ];
  } finally {
    untrack();
    await system.stop();
  }
}

export async function runOpenCost(ctx: {
  quick: boolean;
  templateDir: string;
  tools: Tools;
  log: Log;
}): Promise<{ rows: OpenCostRow[]; rss: RssRow[]; errors: string[] }> {
  const plan = openCostPlan(ctx.quick);
  const rows: OpenCostRow[] = [];
  const rss: RssRow[] = [];
  const errors: string[] = [];
  const child = async (subject: 'gateway' | 'pglite') => {
    ctx.log(`[open] ${subject}: ${plan.count} databases, RSS at ${plan.rssCounts.join('/')} open`);
    try {
      const cpu = cpuSnapshot();
      const out = await runChild({ subject, ...plan, templateDir: ctx.templateDir });
      const otherCpu = otherCpuCores(cpu, cpuSnapshot());
      for (const r of [...out.rows, ...out.rss]) r.otherCpuCores = otherCpu;
      for (const r of out.rows) ctx.log(`[open] ${subject} ${r.case}: p50=${r.p50Ms}ms p95=${r.p95Ms}ms`);
      for (const r of out.rss)
        ctx.log(`[open] ${subject} RSS with ${r.open} open: ${r.perDatabaseMiB} MiB each`);
      return out;
    } catch (err) {
      const error = errorMessage(err);
      errors.push(error);
      ctx.log(`[open] ${subject}: FAILED ${error}`);
      return {
        rows: [{ subject, case: 'new database', measures: '', n: 0, status: 'failed', error }],
        rss: plan.rssCounts.map((open) => ({ subject, open, status: 'failed', error })),
      } satisfies OpenCostChildOutput;
    }
  };
  const reference = async (): Promise<OpenCostRow[]> => {
    if (!ctx.tools.postgresBinDir) {
      const error = `PostgreSQL 15 server binaries missing (${INSTALL_HINT})`;
      return [{ subject: 'postgres', case: 'new database', measures: '', n: 0, status: 'not run', error }];
    }
    try {
      const cpu = cpuSnapshot();
      const pgRows = await postgresReference(ctx.tools.postgresBinDir, plan.count);
      const otherCpu = otherCpuCores(cpu, cpuSnapshot());
      for (const r of pgRows) r.otherCpuCores = otherCpu;
      for (const r of pgRows) ctx.log(`[open] postgres ${r.case}: p50=${r.p50Ms}ms p95=${r.p95Ms}ms`);
      return pgRows;
    } catch (err) {
      const error = errorMessage(err);
      errors.push(`postgres open-cost reference: ${error}`);
      return [{ subject: 'postgres', case: 'new database', measures: '', n: 0, status: 'failed', error }];
    }
  };
  // Measured one after the other, each in its own process; --quick overlaps them.
  const parts = ctx.quick
    ? await Promise.all([child('gateway'), child('pglite'), reference()])
    : [await child('gateway'), await child('pglite'), await reference()];
  const [gateway, pglite, postgres] = parts as [OpenCostChildOutput, OpenCostChildOutput, OpenCostRow[]];
  rows.push(...gateway.rows, ...pglite.rows, ...postgres);
  rss.push(...gateway.rss, ...pglite.rss);
  return { rows, rss, errors };
}
