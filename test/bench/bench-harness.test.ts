import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { runBenchmarks } from '../../bench/harness.js';
import { renderReport, writeBenchmarksMd, writeJson } from '../../bench/report.js';
import { startGateway } from '../../bench/systems/gateway.js';
import type { BenchResults } from '../../bench/types.js';

/**
 * Runs `npm run bench -- --quick` in-process once. It proves the harness produces numbers for
 * every benchmark and cleans up after itself; it never asserts what the numbers are.
 */

const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

let results: BenchResults;
let progress = '';

beforeAll(async () => {
  const lines: string[] = [];
  results = await runBenchmarks({
    quick: true,
    templateDir: inject('templateDir'),
    log: (line) => lines.push(line),
  });
  progress = `${lines.join('\n')}\n${JSON.stringify(results.errors)}`;
}, 180_000);

describe('benchmark harness (--quick)', () => {
  it('runs pgbench against every system and measures the gateway and postgres', () => {
    for (const system of ['gateway', 'pglite-socket', 'postgres'] as const) {
      expect(results.pgbench.filter((r) => r.system === system).length, progress).toBeGreaterThan(0);
    }
    for (const row of results.pgbench.filter((r) => r.system !== 'pglite-socket')) {
      const context = `${JSON.stringify(row)}\n${progress}`;
      expect(row.status, context).toBe('ok');
      expect(isNumber(row.tps), context).toBe(true);
      expect(isNumber(row.latencyAvgMs), context).toBe(true);
      expect(isNumber(row.latencyP99Ms), context).toBe(true);
      expect(isNumber(row.failedTransactions), context).toBe(true);
    }
  });

  it('measures open cost and memory', () => {
    for (const kase of ['new database', 'existing closed database'] as const) {
      for (const subject of ['gateway', 'pglite', 'postgres'] as const) {
        const row = results.openCost.find((r) => r.subject === subject && r.case === kase);
        expect(row?.status, progress).toBe('ok');
        expect(isNumber(row?.p50Ms) && isNumber(row?.p95Ms), JSON.stringify(row)).toBe(true);
      }
    }
    for (const subject of ['gateway', 'pglite'] as const) {
      const rows = results.rss.filter((r) => r.subject === subject);
      expect(rows.length, progress).toBeGreaterThan(0);
      for (const row of rows) expect(isNumber(row.perDatabaseMiB), JSON.stringify(row)).toBe(true);
    }
  });

  it('measures isolation and scale-out', () => {
    for (const system of ['gateway', 'postgres'] as const) {
      const iso = results.isolation.find((r) => r.system === system);
      expect(iso?.status, `${JSON.stringify(iso)}\n${progress}`).toBe('ok');
      expect(
        isNumber(iso?.p50Ms) && isNumber(iso?.p99Ms) && isNumber(iso?.issuedDuring),
        JSON.stringify(iso),
      ).toBe(true);
      const scale = results.scale.find((r) => r.system === system);
      expect(scale?.status, `${JSON.stringify(scale)}\n${progress}`).toBe('ok');
      expect(isNumber(scale?.oneDbTps) && isNumber(scale?.twoDbTps), JSON.stringify(scale)).toBe(true);
    }
    expect(results.isolation.map((r) => r.system)).toContain('pglite-socket');
    expect(results.scale.map((r) => r.system)).toContain('pglite-socket');
  });

  it('measures a node at rest (dist/ only when built)', () => {
    const rows = results.baselineRss ?? [];
    for (const runtime of ['node', 'tsx'] as const) {
      const measured = rows.filter((r) => r.runtime === runtime);
      expect(measured.length, progress).toBeGreaterThan(0);
      for (const row of measured) {
        expect(row.status, `${JSON.stringify(row)}\n${progress}`).toBe('ok');
        expect(isNumber(row.settledMiB) && isNumber(row.afterGcMiB), JSON.stringify(row)).toBe(true);
      }
    }
    expect(rows.filter((r) => r.runtime === 'dist' && !r.stage).map((r) => r.warmEngines)).toEqual([0, 2]);
  });

  it('renders tables and writes the JSON and markdown reports', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'bench-report-test-'));
    try {
      const report = renderReport(results);
      expect(report).toContain('| gateway |');
      // The matched gateway runs only when asked for, and then gets its own columns.
      expect(results.pgbench.some((r) => r.system === 'gateway-matched')).toBe(false);
      expect(report).not.toContain('matched / pglite-socket');
      const asMatched = results.pgbench
        .filter((r) => r.system === 'gateway')
        .map((r) => ({ ...r, system: 'gateway-matched' as const }));
      const withMatched = renderReport({ ...results, pgbench: [...results.pgbench, ...asMatched] });
      expect(withMatched).toContain('matched / pglite-socket');
      expect(report).toContain('gateway / postgres');
      expect(report).toContain('### Memory at rest');
      const json = JSON.parse(await readFile(await writeJson(results, dir), 'utf8')) as BenchResults;
      expect(json.pgbench.length).toBe(results.pgbench.length);
      const md = await readFile(await writeBenchmarksMd(results, path.join(dir, 'BENCHMARKS.md')), 'utf8');
      expect(md).toContain('## How to rerun');
      expect(md).toContain('| gateway |');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('starts the gateway set up like pglite-socket: plaintext, FSYNC=off, 128 MiB', async () => {
    const system = await startGateway({ templateDir: inject('templateDir'), matched: true });
    try {
      expect(system.kind).toBe('gateway-matched');
      const target = await system.createDatabase('matched');
      expect(target.conninfo).toContain('sslmode=disable');
      const client = new pg.Client(target.pgConfig);
      await client.connect();
      try {
        const { rows } = await client.query(
          "SELECT current_setting('shared_buffers') AS sb, pg_catalog.pg_backend_pid() IS NOT NULL AS up",
        );
        expect(rows[0]).toEqual({ sb: '128MB', up: true });
      } finally {
        await client.end();
      }
      expect(system.description).toContain('FSYNC=off');
    } finally {
      await system.stop();
    }
  });
});
