import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createScramSha256Data } from 'pg-gateway';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/**
 * /metrics: valid exposition format (Prometheus' own promtool checks it), every metric the README
 * lists, per-database series for the busiest METRICS_TOP_DBS databases only, and a series count
 * that does not grow with the number of databases (2,000 here: catalog rows, a few open).
 */

const TOKEN = 'metrics-test-token';
const TOP = 5;
const USED = 8;
let t: TestServer;
let archiveDir: string;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-metrics-'));
  t = await startTestServer({
    ADMIN_TOKEN: TOKEN,
    METRICS_TOP_DBS: String(TOP),
    ARCHIVE_URL: pathToFileURL(archiveDir).href,
    DURABILITY: 'async',
    WAL_SHIP_INTERVAL: '100ms',
    SNAPSHOT_INTERVAL: '0',
  });
});
afterAll(async () => {
  await t?.close();
  await rm(archiveDir, { recursive: true, force: true });
});

/** GET on the admin API with the token, on a fresh connection (no keep-alive race). */
function get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port: t.server.adminPort,
        path,
        agent: false,
        headers: { authorization: `Bearer ${TOKEN}` },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

async function scrape(): Promise<string> {
  const res = await get('/metrics');
  expect(res.status).toBe(200);
  return res.body;
}

/** Sample lines (not comments) grouped by metric name (without labels). */
function series(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0] ?? '';
    out.set(name, [...(out.get(name) ?? []), line]);
  }
  return out;
}

function value(text: string, sample: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? Number.NaN : Number(line.slice(sample.length + 1));
}

/**
 * promtool's findings, less the lint complaints about prom-client's own default process metrics
 * (`nodejs_active_handles_total` is a gauge named like a counter): parse errors and anything about
 * the gateway's metrics remain.
 */
function promtool(text: string): Promise<string[]> {
  return new Promise((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], { timeout: 30_000 }, (err, stdout, stderr) => {
      const findings = `${stdout}${stderr}`.split('\n').filter((l) => l.trim() && !/^nodejs_\w+ /.test(l));
      if (err && typeof err.code !== 'number') findings.push(`promtool did not run: ${err.message}`);
      resolve(findings);
    });
    child.stdin?.end(text);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('/metrics', () => {
  let before: string;

  it('counts queries, opens, closes by cause, snapshots and WAL shipped', async () => {
    // Database i runs i+1 queries: the busiest are the highest numbers.
    for (let i = 0; i < USED; i++) {
      const id = `used${i}`;
      const password = await t.createDatabase(id);
      await withClient(t.pgConfig(id, password), async (c) => {
        await c.query('create table t (x int)');
        for (let q = 0; q <= i; q++) await c.query('insert into t values ($1)', [q]);
      });
    }
    let text = await scrape();
    for (
      let tries = 0;
      tries < 100 && !(value(text, 'pglite_gateway_wal_shipped_bytes_total') > 0);
      tries++
    ) {
      await sleep(100);
      text = await scrape();
    }
    expect(value(text, 'pglite_gateway_wal_shipped_bytes_total')).toBeGreaterThan(0);
    expect(value(text, 'pglite_gateway_wal_ship_duration_seconds_count')).toBeGreaterThan(0);
    const close = await fetch(`http://127.0.0.1:${t.server.adminPort}/v1/databases/used0/close`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(close.status).toBe(204);
    text = await scrape();
    expect(value(text, 'pglite_gateway_queries_total')).toBeGreaterThanOrEqual(((USED + 1) * USED) / 2);
    expect(value(text, 'pglite_gateway_transactions_total')).toBeGreaterThanOrEqual(((USED + 1) * USED) / 2);
    expect(value(text, 'pglite_gateway_query_duration_seconds_count')).toBeGreaterThanOrEqual(USED);
    expect(value(text, 'pglite_gateway_database_opens_total')).toBe(USED);
    expect(value(text, 'pglite_gateway_database_open_duration_seconds_count')).toBe(USED);
    expect(value(text, 'pglite_gateway_database_closes_total{cause="admin"}')).toBe(1);
    expect(value(text, 'pglite_gateway_snapshot_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(value(text, 'pglite_gateway_snapshot_bytes_total')).toBeGreaterThan(0);
    expect(value(text, 'pglite_gateway_open_databases')).toBe(USED - 1);
    expect(value(text, 'pglite_gateway_warm_workers')).toBeGreaterThanOrEqual(0);
    expect(value(text, 'pglite_gateway_archive_errors_total{operation="wal"}')).toBe(0);
    // Per database: the TOP busiest only.
    const perDb = series(text).get('pglite_gateway_database_queries_total') ?? [];
    expect(perDb).toHaveLength(TOP);
    for (let i = USED - TOP; i < USED; i++)
      expect(perDb.some((l) => l.includes(`database="used${i}"`))).toBe(true);
    expect(
      value(text, `pglite_gateway_database_queries_total{database="used${USED - 1}"}`),
    ).toBeGreaterThanOrEqual(USED + 1);
    before = text;
  });

  it('passes promtool check metrics', async () => {
    expect(await promtool(before)).toEqual([]);
    // The check can fail: a malformed exposition is reported.
    expect((await promtool(`${before}pglite_gateway_bad{x="1" 2\n`)).length).toBeGreaterThan(0);
  });

  it('keeps the series count bounded with 2,000 databases', async () => {
    const scram = await createScramSha256Data('a-password-long-enough');
    // Opening 2,000 databases is too heavy for a test: each gets a catalog row and some recorded
    // activity (what its clients' units would have counted), so all compete for the top series.
    const activity = t.server.registry.activity;
    for (let i = 0; i < 2000; i++) {
      await t.server.catalog.createDatabase({ id: `many${i}`, username: 'postgres', scram });
      for (let u = 0; u < i % 3; u++) activity.of(`many${i}`).unitDone(1, true);
    }
    const after = await scrape();
    const ours = (text: string) => [...series(text)].filter(([k]) => k.startsWith('pglite_gateway_'));
    const count = (text: string) => ours(text).reduce((n, [, lines]) => n + lines.length, 0);
    const families = (text: string) => ours(text).map(([k]) => k);
    expect(families(after)).toEqual(families(before));
    expect(count(after)).toBe(count(before));
    expect(series(after).get('pglite_gateway_database_transactions_total')).toHaveLength(TOP);
    const stats = JSON.parse((await get('/v1/stats')).body) as { databases: unknown[] };
    expect(stats.databases).toHaveLength(2000 + USED);
    expect(await promtool(after)).toEqual([]);
  });
});
