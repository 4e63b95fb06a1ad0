import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPgbench, type PgbenchResult, runPgbench } from '../helpers/pgbench.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** Seconds per pgbench run; 20 is the requirement, PGBENCH_SECONDS shortens it for local runs. */
const secs = Number(process.env.PGBENCH_SECONDS ?? '20');
const DB = 'bench';

let t: TestServer;
let password: string;
let conninfo: string;

beforeAll(async () => {
  findPgbench(); // fails early with the install hint when pgbench is missing
  t = await startTestServer();
  password = await t.createDatabase(DB);
  conninfo = [
    `host=${DB}.db.example.com`,
    'hostaddr=127.0.0.1',
    `port=${t.port}`,
    'user=postgres',
    'dbname=postgres',
    'sslmode=verify-full',
    `sslrootcert=${t.caPath}`,
  ].join(' ');
});
afterAll(() => t?.close());

function describeRun(r: PgbenchResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr.slice(-4000)}`;
}

describe('pgbench through the gateway over TLS', () => {
  const processedByMode: Record<string, number> = {};

  it('initialises scale 1 with pgbench -i (client-side COPY)', { timeout: 180_000 }, async () => {
    const r = await runPgbench(['-i', '-s', '1', conninfo], {
      env: { PGPASSWORD: password },
      timeoutMs: 150_000,
    });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stderr, describeRun(r)).toMatch(/done in/);
    const counts = await withClient(t.pgConfig(DB, password), async (c) => {
      const q = async (table: string) =>
        (await c.query<{ n: number }>(`select count(*)::int as n from ${table}`)).rows[0]?.n;
      return {
        accounts: await q('pgbench_accounts'),
        branches: await q('pgbench_branches'),
        tellers: await q('pgbench_tellers'),
        history: await q('pgbench_history'),
      };
    });
    expect(counts).toEqual({ accounts: 100_000, branches: 1, tellers: 10, history: 0 });
  });

  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    it(`runs -c 8 -j 2 -T ${secs} -M ${mode} without failed transactions`, {
      timeout: (secs + 90) * 1000,
    }, async () => {
      const r = await runPgbench(['-n', '-c', '8', '-j', '2', '-T', String(secs), '-M', mode, conninfo], {
        env: { PGPASSWORD: password },
        timeoutMs: (secs + 60) * 1000,
      });
      console.log(
        `pgbench -M ${mode}: processed=${r.processed} failed=${r.failed} tps=${r.tps} exit=${r.code}`,
      );
      expect(r.code, describeRun(r)).toBe(0);
      expect(r.stdout, describeRun(r)).toMatch(/^number of failed transactions: 0\b/m);
      expect(r.failed, describeRun(r)).toBe(0);
      expect(r.processed, describeRun(r)).toBeGreaterThan(0);
      processedByMode[mode] = r.processed ?? 0;
    });
  }

  it('keeps the balances consistent and records every processed transaction', async () => {
    expect(Object.keys(processedByMode).sort(), 'all three pgbench runs must have passed').toEqual([
      'extended',
      'prepared',
      'simple',
    ]);
    const totalProcessed = Object.values(processedByMode).reduce((a, b) => a + b, 0);
    const sums = await withClient(t.pgConfig(DB, password), async (c) => {
      const { rows } = await c.query<{ a: string; b: string; t: string; h: string; n: string }>(
        `select (select coalesce(sum(abalance), 0) from pgbench_accounts)::text as a,
                (select coalesce(sum(bbalance), 0) from pgbench_branches)::text as b,
                (select coalesce(sum(tbalance), 0) from pgbench_tellers)::text as t,
                (select coalesce(sum(delta), 0) from pgbench_history)::text as h,
                (select count(*) from pgbench_history)::text as n`,
      );
      return rows[0];
    });
    console.log(`consistency: ${JSON.stringify(sums)} totalProcessed=${totalProcessed}`);
    expect(sums).toBeDefined();
    expect(sums?.b).toBe(sums?.a);
    expect(sums?.t).toBe(sums?.a);
    expect(sums?.h).toBe(sums?.a);
    expect(Number(sums?.n)).toBe(totalProcessed);
  });
});
