import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { startGateway } from './systems/gateway.js';
import { startPostgres } from './systems/postgres.js';
import type { SystemKind, SystemUnderTest, Target } from './systems/types.js';
import { cpuSnapshot, errorMessage, type Log, otherCpuCores, percentile, round } from './tools.js';

/**
 * The multi-tenant mix: many small databases with one client each, most traffic on a few hot
 * ones and a long tail that is touched now and then (Zipf, s = 1.1), for a fixed time. One driver
 * process keeps one node-postgres connection per database and runs `WORKERS` concurrent loops;
 * each transaction picks its database by the skew and runs a point read (80%) or an update (20%)
 * on a 1,000-row table with parameters (extended protocol, as ORMs send). Measured against the
 * gateway (TLS, SCRAM, transaction pool mode, as `serve` runs it) and against PostgreSQL 15 with
 * the same number of databases, one after the other, in the same run.
 */

export const MIX_BENCH = 'mix';

export interface MixRow {
  system: SystemKind;
  databases: number;
  seconds: number;
  status: 'ok' | 'failed' | 'not run';
  error?: string;
  transactions?: number;
  errors?: number;
  tps?: number;
  p50Ms?: number;
  p99Ms?: number;
  /**
   * Peak memory while the mix ran: the gateway's process (RSS, the driver included: it runs in
   * this process), or the PostgreSQL server's processes (sum of PSS: shared buffers once).
   */
  peakMiB?: number;
  /** The gateway's MAX_MEMORY. */
  maxMemoryMiB?: number;
  /** Gateway: databases opened and closed (evicted) during the mix. */
  opened?: number;
  evicted?: number;
  otherCpuCores?: number;
}

export interface MixResults {
  rows: MixRow[];
  errors: string[];
}

const WORKERS = 16;
const ROWS = 1000;
const SKEW = 1.1;

/** Cumulative Zipf weights over `n` ranks. */
function zipf(n: number, s: number): number[] {
  const weights = Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);
  const total = weights.reduce((a, b) => a + b, 0);
  let sum = 0;
  return weights.map((w) => {
    sum += w / total;
    return sum;
  });
}

function pick(cumulative: number[]): number {
  const r = Math.random();
  let lo = 0;
  let hi = cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((cumulative[mid] as number) < r) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const MIB = 1024 * 1024;

/** Resident memory of this process. */
function selfRss(): number {
  return process.memoryUsage.rss();
}

/** Sum of PSS of this process's descendants (the PostgreSQL server and its backends). */
function descendantsPss(): number {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(pid, Number(fields[1]));
    } catch {
      // gone meanwhile
    }
  }
  const mine = new Set([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, parent] of parents) {
      if (!mine.has(pid) && mine.has(parent)) {
        mine.add(pid);
        grew = true;
      }
    }
  }
  mine.delete(process.pid);
  let total = 0;
  for (const pid of mine) {
    try {
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return total;
}

async function prepare(target: Target): Promise<pg.Client> {
  const client = new pg.Client(target.pgConfig);
  client.on('error', () => undefined);
  await client.connect();
  await client.query('create table if not exists kv (k int primary key, v int not null)');
  await client.query(
    `insert into kv select g, 0 from generate_series(1, ${ROWS}) g on conflict (k) do nothing`,
  );
  return client;
}

async function runMix(
  system: SystemUnderTest,
  opts: { databases: number; seconds: number; log: Log; memory: () => number },
): Promise<Omit<MixRow, 'system' | 'databases' | 'seconds'>> {
  const targets: Target[] = [];
  for (let i = 0; i < opts.databases; i++) targets.push(await system.createDatabase(`mix${i}`));
  const clients: pg.Client[] = [];
  try {
    // A few at a time: opening a hundred databases at once is not what is measured.
    for (let i = 0; i < targets.length; i += 8) {
      clients.push(...(await Promise.all(targets.slice(i, i + 8).map(prepare))));
    }
    const cumulative = zipf(clients.length, SKEW);
    const latencies: number[] = [];
    let errors = 0;
    let firstError: string | undefined;
    let peak = opts.memory();
    const sampler = setInterval(() => {
      peak = Math.max(peak, opts.memory());
    }, 500);
    const cpu = cpuSnapshot();
    const started = performance.now();
    const deadline = started + opts.seconds * 1000;
    // One query at a time per connection (node-postgres deprecates queueing on a client): a
    // transaction picked for a busy database waits its turn, and that wait counts in its latency.
    const turns: Promise<unknown>[] = clients.map(() => Promise.resolve());
    const loop = async () => {
      while (performance.now() < deadline) {
        const i = pick(cumulative);
        const client = clients[i] as pg.Client;
        const k = 1 + Math.floor(Math.random() * ROWS);
        const t0 = performance.now();
        try {
          const run = (turns[i] as Promise<unknown>).then(() =>
            Math.random() < 0.8
              ? client.query('select v from kv where k = $1', [k])
              : client.query('update kv set v = v + 1 where k = $1', [k]),
          );
          turns[i] = run.catch(() => undefined);
          await run;
          latencies.push(performance.now() - t0);
        } catch (err) {
          errors++;
          firstError ??= errorMessage(err);
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, loop));
    const elapsed = (performance.now() - started) / 1000;
    clearInterval(sampler);
    peak = Math.max(peak, opts.memory());
    return {
      status: errors === 0 ? 'ok' : 'failed',
      ...(firstError ? { error: firstError } : {}),
      transactions: latencies.length,
      errors,
      tps: round(latencies.length / elapsed, 1),
      p50Ms: round(percentile(latencies, 50), 3),
      p99Ms: round(percentile(latencies, 99), 3),
      peakMiB: round(peak / MIB, 0),
      otherCpuCores: otherCpuCores(cpu, cpuSnapshot()),
    };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

export async function runTenantMix(opts: {
  quick: boolean;
  seconds?: number;
  postgresBinDir: string | undefined;
  log: Log;
}): Promise<MixResults> {
  const databases = opts.quick ? 10 : 100;
  const seconds = opts.seconds ?? (opts.quick ? 3 : 60);
  const base = { databases, seconds };
  const rows: MixRow[] = [];
  const errors: string[] = [];
  const measure = async (
    kind: SystemKind,
    start: () => Promise<SystemUnderTest>,
    extra: (system: SystemUnderTest) => { memory: () => number; after?: () => Partial<MixRow> },
  ) => {
    let system: SystemUnderTest | undefined;
    try {
      system = await start();
      const { memory, after } = extra(system);
      const row: MixRow = {
        system: kind,
        ...base,
        ...(await runMix(system, { databases, seconds, log: opts.log, memory })),
      };
      Object.assign(row, after?.());
      rows.push(row);
      opts.log(
        `[mix] ${kind}: ${row.tps} tps p50 ${row.p50Ms} ms p99 ${row.p99Ms} ms peak ${row.peakMiB} MiB errors ${row.errors}`,
      );
    } catch (err) {
      const error = `${kind}: ${errorMessage(err)}`;
      opts.log(`[mix] FAILED ${error}`);
      errors.push(`mix ${error}`);
      rows.push({ system: kind, ...base, status: 'failed', error: errorMessage(err) });
    } finally {
      await system?.stop().catch(() => undefined);
    }
  };

  await measure(
    'gateway',
    () => startGateway(),
    (system) => {
      const gateway = system as Awaited<ReturnType<typeof startGateway>>;
      const stats = gateway.server.registry.stats;
      const before = { ...stats };
      return {
        memory: selfRss,
        after: () => ({
          opened: stats.opens - before.opens,
          evicted: stats.closes - before.closes,
          maxMemoryMiB: round(loadConfig({}).maxMemoryBytes / MIB, 0),
        }),
      };
    },
  );
  if (opts.postgresBinDir) {
    const binDir = opts.postgresBinDir;
    await measure(
      'postgres',
      () => startPostgres(binDir),
      () => ({ memory: descendantsPss }),
    );
  } else {
    rows.push({ system: 'postgres', ...base, status: 'not run', error: 'PostgreSQL 15 binaries missing' });
  }
  return { rows, errors };
}

export function renderTenantMix(results: MixResults): string {
  const first = results.rows[0];
  const head = first
    ? `### Multi-tenant mix: ${first.databases} databases, 1 client each, Zipf ${SKEW} access, ${WORKERS} concurrent transactions, ${first.seconds} s\n`
    : '### Multi-tenant mix\n';
  const cell = (v: number | undefined) => (v === undefined ? '—' : String(v));
  const lines = [
    head,
    '| system | status | TPS | p50 ms | p99 ms | errors | peak MiB | MAX_MEMORY MiB | opened | evicted |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...results.rows.map(
      (r) =>
        `| ${r.system} | ${r.status}${r.error ? ` (${r.error})` : ''} | ${cell(r.tps)} | ${cell(r.p50Ms)} | ${cell(r.p99Ms)} | ${cell(r.errors)} | ${cell(r.peakMiB)} | ${cell(r.maxMemoryMiB)} | ${cell(r.opened)} | ${cell(r.evicted)} |`,
    ),
  ];
  const g = results.rows.find((r) => r.system === 'gateway' && r.status === 'ok');
  const p = results.rows.find((r) => r.system === 'postgres' && r.status === 'ok');
  if (g?.tps && p?.tps) lines.push(`\ngateway / postgres TPS: ${round(g.tps / p.tps, 2)}×`);
  lines.push(
    '\nPeak memory: the gateway process (RSS; the driver runs in it too) vs the PostgreSQL server processes (sum of PSS).',
  );
  return lines.join('\n');
}
