import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { createFromTemplate } from '../src/pgdata/template.js';
import { startGateway } from './systems/gateway.js';
import type { Target } from './systems/types.js';
import { errorMessage, percentile, round, sleep, stopEverything, trackRunning } from './tools.js';
import {
  type OpenCase,
  type OpenCostChildInput,
  type OpenCostChildOutput,
  type OpenCostRow,
  RESULT_PREFIX,
  type RssRow,
} from './types.js';

/**
 * Runs in a fresh Node process (started by open-cost.ts with --expose-gc), so its RSS is only
 * the subject's: either the gateway (clients connect over TLS + SCRAM) or plain PGlite instances
 * opened directly, the baseline. Prints one `RESULT <json>` line.
 */

const MiB = 1024 * 1024;

/**
 * Pause before each timed open, so it starts with the server at rest: closing the previous
 * database recycles its worker in the background (~0.1 s of CPU), which on a 2-core machine
 * would otherwise compete with the open being timed.
 */
const SETTLE_MS = 500;

async function settledRss(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    gc?.();
    await sleep(200);
  }
  return process.memoryUsage().rss;
}

/** One RSS measurement; `previous` (the last, smaller count) gives the marginal cost. */
function rssRow(
  subject: RssRow['subject'],
  n: number,
  reallyOpen: number,
  rss0: number,
  rss: number,
  previous: RssRow | undefined,
): RssRow {
  const delta = (rss - rss0) / MiB;
  const prevDelta = previous?.rssDeltaMiB ?? 0;
  const prevOpen = previous?.open ?? 0;
  return {
    subject,
    open: n,
    reallyOpen,
    status: reallyOpen === n ? 'ok' : 'failed',
    ...(reallyOpen === n ? {} : { error: `${reallyOpen} databases open instead of ${n}` }),
    rssDeltaMiB: round(delta, 1),
    perDatabaseMiB: round(delta / n, 1),
    marginalMiB: round((delta - prevDelta) / (n - prevOpen), 1),
  };
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

function row(
  subject: OpenCostRow['subject'],
  kase: OpenCase,
  measures: string,
  samples: number[],
): OpenCostRow {
  return {
    subject,
    case: kase,
    measures,
    n: samples.length,
    status: 'ok',
    p50Ms: round(percentile(samples, 50), 1),
    p95Ms: round(percentile(samples, 95), 1),
  };
}

async function firstQuery(config: pg.ClientConfig): Promise<void> {
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function gatewayOpenCost(input: OpenCostChildInput): Promise<OpenCostChildOutput> {
  const gw = await startGateway({ templateDir: input.templateDir });
  trackRunning(() => gw.stop());
  try {
    const total = Math.max(input.count, ...input.rssCounts);
    const targets: Target[] = [];
    const create: number[] = [];
    for (let i = 0; i < total; i++) {
      let target: Target | undefined;
      create.push(
        await timed(async () => {
          target = await gw.createDatabase(`open-${i}`);
        }),
      );
      targets.push(target as Target);
    }
    const timedTargets = targets.slice(0, input.count);
    const fresh: number[] = [];
    for (const t of timedTargets) {
      await sleep(SETTLE_MS);
      fresh.push(await timed(() => firstQuery(t.pgConfig)));
      await gw.server.registry.close(t.name);
    }
    const reopened: number[] = [];
    for (const t of timedTargets) {
      await sleep(SETTLE_MS);
      reopened.push(await timed(() => firstQuery(t.pgConfig)));
      await gw.server.registry.close(t.name);
    }
    const warm: number[] = [];
    const first = timedTargets[0] as Target;
    await firstQuery(first.pgConfig);
    for (let i = 0; i < input.count; i++) warm.push(await timed(() => firstQuery(first.pgConfig)));
    await gw.server.registry.close(first.name);

    const rows = [
      row(
        'gateway',
        'create',
        `catalog entry + SCRAM verifier + PGDATA (spare or template copy), ${total} back to back`,
        create,
      ),
      row(
        'gateway',
        'new database',
        'TLS + SCRAM connect, open (never opened before), select 1; server at rest',
        fresh,
      ),
      row(
        'gateway',
        'existing closed database',
        'TLS + SCRAM connect, reopen, select 1; server at rest',
        reopened,
      ),
      row('gateway', 'open database', 'TLS + SCRAM connect to an already open database, select 1', warm),
    ];
    const rss: RssRow[] = [];
    const rss0 = await settledRss();
    let opened = 0;
    for (const n of input.rssCounts) {
      for (; opened < n; opened++) await firstQuery((targets[opened] as Target).pgConfig);
      rss.push(rssRow('gateway', n, gw.server.registry.openCount, rss0, await settledRss(), rss.at(-1)));
    }
    return { rows, rss };
  } finally {
    await gw.stop();
  }
}

async function openPglite(dataDir: string): Promise<PGlite> {
  const db = new PGlite({ dataDir });
  await db.waitReady;
  await db.query('select 1');
  return db;
}

async function pgliteOpenCost(input: OpenCostChildInput): Promise<OpenCostChildOutput> {
  const root = await mkdtemp(path.join(tmpdir(), 'bench-open-pglite-'));
  trackRunning(() => rm(root, { recursive: true, force: true }));
  try {
    const total = Math.max(input.count, ...input.rssCounts);
    const dirs: string[] = [];
    for (let i = 0; i < total; i++) {
      const dir = path.join(root, `db-${i}`);
      await createFromTemplate(input.templateDir, dir);
      dirs.push(dir);
    }
    const timedDirs = dirs.slice(0, input.count);
    const fresh: number[] = [];
    for (const dir of timedDirs) {
      let db: PGlite | undefined;
      fresh.push(
        await timed(async () => {
          db = await openPglite(dir);
        }),
      );
      await db?.close();
    }
    const reopened: number[] = [];
    for (const dir of timedDirs) {
      let db: PGlite | undefined;
      reopened.push(
        await timed(async () => {
          db = await openPglite(dir);
        }),
      );
      await db?.close();
    }
    const initdb: number[] = [];
    for (let i = 0; i < input.initdbCount; i++) {
      const dir = path.join(root, `initdb-${i}`);
      let db: PGlite | undefined;
      initdb.push(
        await timed(async () => {
          db = await openPglite(dir);
        }),
      );
      await db?.close();
      await rm(dir, { recursive: true, force: true });
    }
    const rows = [
      row('pglite', 'new database', 'new PGlite on a fresh copy of the template, waitReady, select 1', fresh),
      row(
        'pglite',
        'existing closed database',
        'new PGlite on an existing PGDATA, waitReady, select 1',
        reopened,
      ),
    ];
    if (initdb.length > 0) {
      rows.push(
        row(
          'pglite',
          'new database (initdb)',
          "new PGlite on an empty directory (PGlite's initdb), select 1",
          initdb,
        ),
      );
    }
    const rss: RssRow[] = [];
    const open: PGlite[] = [];
    const rss0 = await settledRss();
    for (const n of input.rssCounts) {
      while (open.length < n) open.push(await openPglite(dirs[open.length] as string));
      rss.push(rssRow('pglite', n, open.length, rss0, await settledRss(), rss.at(-1)));
    }
    for (const db of open) await db.close();
    return { rows, rss };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const input = JSON.parse(process.env.BENCH_OPEN_COST ?? '') as OpenCostChildInput;
  const output = input.subject === 'gateway' ? await gatewayOpenCost(input) : await pgliteOpenCost(input);
  process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(output)}\n`);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => void stopEverything().finally(() => process.exit(130)));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`open-cost child failed: ${errorMessage(err)}\n${(err as Error).stack ?? ''}\n`);
    process.exit(1);
  },
);
