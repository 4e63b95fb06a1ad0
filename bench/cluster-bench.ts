import { appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { type ClusterHarness, type HarnessNode, startClusterHarness } from '../test/helpers/cluster.js';

/**
 * Cluster mode (issue 16) on 3 real node processes with a PostgreSQL 15 catalog and s3rver, as
 * the fault harness starts them (DURABILITY=sync, LEASE_TTL 2 s):
 * - the latency a forwarded session adds: `select 1` round trips, 1 client, on the owner directly
 *   and through another node, interleaved so both see the same machine;
 * - a move (`db move`): until the owner answers, and until the first write through the new owner;
 * - a failover: kill -9 of the owner, until a write through another node succeeds (the promise:
 *   within LEASE_TTL + the open time).
 */

export const CLUSTER_BENCH = 'cluster';

const PASSWORD = 'cluster-bench-password';
const DB = 'bench';
const LEASE_TTL_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LatencyRow {
  path: 'direct' | 'forwarded';
  queries: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
}

export interface ClusterBenchResults {
  leaseTtlMs: number;
  latency: LatencyRow[];
  /** Per move: the owner's answer, and the first write through the new owner after it. */
  moves: { answeredMs: number; firstWriteMs: number }[];
  /** Per kill -9 of the owner: until a write through another node succeeded. */
  failoversMs: number[];
}

const percentile = (sorted: number[], q: number) => sorted[Math.floor(q * (sorted.length - 1))] ?? 0;

async function connect(node: HarnessNode, timeoutMs = 15_000): Promise<pg.Client> {
  const c = new pg.Client({
    ...node.pgConfig(DB, PASSWORD),
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  } as pg.ClientConfig);
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** `select 1` round trips on one connection, in microseconds. */
async function roundTrips(node: HarnessNode, n: number): Promise<number[]> {
  const c = await connect(node);
  try {
    for (let i = 0; i < 50; i++) await c.query('select 1'); // warm up
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await c.query('select 1');
      times.push((performance.now() - t0) * 1000);
    }
    return times;
  } finally {
    await c.end();
  }
}

/** Milliseconds from `since` until an insert through a node other than `avoid` succeeds. */
async function untilWritten(cluster: ClusterHarness, since: number, avoid?: HarnessNode): Promise<number> {
  for (let attempt = 0; attempt < 300; attempt++) {
    const c = await connect(cluster.anyNode(avoid), 5000).catch(() => undefined);
    try {
      if (c) {
        await c.query('insert into t (at) values (now())');
        return Math.round(performance.now() - since);
      }
    } catch {
      // not served yet
    } finally {
      await c?.end().catch(() => undefined);
    }
    await sleep(50);
  }
  throw new Error('the database was not served again within 300 attempts');
}

export async function runClusterBench(opts: {
  quick: boolean;
  log: (line: string) => void;
}): Promise<ClusterBenchResults> {
  const cluster = await startClusterHarness({
    size: 3,
    leaseTtl: `${LEASE_TTL_MS}ms`,
    env: { DURABILITY: 'sync', QUERY_WAIT_TIMEOUT: '60s' },
    // The base template, kept between bench runs (its initdb costs seconds).
    templateDir: path.join(tmpdir(), 'pglite-gateway-bench-base-template'),
  });
  try {
    await cluster.nodes[0]?.createDatabase(DB, PASSWORD);
    const setup = await connect(cluster.anyNode());
    await setup.query('create table t (n serial primary key, at timestamptz)');
    await setup.query('insert into t (at) select now() from generate_series(1, 1000)');
    await setup.end();

    const owner = async () => {
      const node = await cluster.ownerOf(DB);
      if (!node) throw new Error(`${DB} has no live owner`);
      return node;
    };
    // Latency: direct and forwarded, interleaved.
    const perRound = opts.quick ? 200 : 2000;
    const samples: Record<LatencyRow['path'], number[]> = { direct: [], forwarded: [] };
    for (let round = 0; round < 2; round++) {
      const o = await owner();
      const entry = cluster.nodes.find((n) => n !== o && n.alive()) as HarnessNode;
      samples.direct.push(...(await roundTrips(o, perRound)));
      samples.forwarded.push(...(await roundTrips(entry, perRound)));
    }
    const latency = (['direct', 'forwarded'] as const).map((p): LatencyRow => {
      const sorted = [...samples[p]].sort((a, b) => a - b);
      return {
        path: p,
        queries: sorted.length,
        meanUs: Math.round(sorted.reduce((a, b) => a + b, 0) / sorted.length),
        p50Us: Math.round(percentile(sorted, 0.5)),
        p99Us: Math.round(percentile(sorted, 0.99)),
      };
    });
    opts.log(`cluster bench: latency ${JSON.stringify(latency)}`);

    // Moves, each to another live node.
    const moves: ClusterBenchResults['moves'] = [];
    for (let i = 0; i < (opts.quick ? 1 : 5); i++) {
      const from = await owner();
      const to = cluster.nodes.find((n) => n !== from && n.alive()) as HarnessNode;
      const t0 = performance.now();
      const res = await from.request('POST', '/v1/cluster/move', { database: DB, node: to.id }, 120_000);
      if (res.status !== 200) throw new Error(`move: ${res.status} ${res.body}`);
      const answeredMs = Math.round(performance.now() - t0);
      moves.push({ answeredMs, firstWriteMs: await untilWritten(cluster, t0) });
      opts.log(`cluster bench: move ${from.id} → ${to.id}: ${JSON.stringify(moves.at(-1))}`);
    }

    // Failovers: kill -9 of the owner, then it comes back for the next round.
    const failoversMs: number[] = [];
    for (let i = 0; i < (opts.quick ? 1 : 3); i++) {
      const victim = await owner();
      await victim.kill9();
      failoversMs.push(await untilWritten(cluster, performance.now(), victim));
      opts.log(`cluster bench: failover after kill -9 of ${victim.id}: ${failoversMs.at(-1)} ms`);
      await victim.start();
      await sleep(LEASE_TTL_MS);
    }
    return { leaseTtlMs: LEASE_TTL_MS, latency, moves, failoversMs };
  } finally {
    await cluster.close();
  }
}

const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );

export function renderClusterReport(r: ClusterBenchResults): string {
  const direct = r.latency.find((l) => l.path === 'direct');
  const ratio = (row: LatencyRow) => (direct ? (row.meanUs / direct.meanUs).toFixed(2) : '?');
  return [
    '## Cluster: forwarded sessions, moves and failover',
    '',
    `3 node processes on this machine, a PostgreSQL 15 catalog, s3rver, DURABILITY=sync, LEASE_TTL ${r.leaseTtlMs / 1000} s. Latency: \`select 1\`, 1 client, on the owner directly and through another node (forwarded over the internal listener), interleaved in the same run.`,
    '',
    '| path | queries | mean µs | p50 µs | p99 µs | mean vs direct |',
    '|---|---|---|---|---|---|',
    ...r.latency.map(
      (l) => `| ${l.path} | ${l.queries} | ${l.meanUs} | ${l.p50Us} | ${l.p99Us} | ${ratio(l)}× |`,
    ),
    '',
    '| operation | runs | median ms | each (ms) |',
    '|---|---|---|---|',
    `| db move: owner answers | ${r.moves.length} | ${median(r.moves.map((m) => m.answeredMs))} | ${r.moves.map((m) => m.answeredMs).join(', ')} |`,
    `| db move: first write through the new owner | ${r.moves.length} | ${median(r.moves.map((m) => m.firstWriteMs))} | ${r.moves.map((m) => m.firstWriteMs).join(', ')} |`,
    `| kill -9 of the owner: first write through another node (target ≤ LEASE_TTL + open) | ${r.failoversMs.length} | ${median(r.failoversMs)} | ${r.failoversMs.join(', ')} |`,
  ].join('\n');
}

export async function appendClusterReport(file: string, r: ClusterBenchResults): Promise<void> {
  await appendFile(file, `\n${renderClusterReport(r)}\n`);
}
