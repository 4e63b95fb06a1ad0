import { describe, expect, it } from 'vitest';
import { renderEngineHop, runEngineHop } from '../../bench/engine-hop.js';
import { renderTenantMix, runTenantMix } from '../../bench/tenant-mix.js';
import { findTools } from '../../bench/tools.js';

/**
 * The benchmarks of issue 17 run in --quick form and produce numbers for every row (never
 * asserting what the numbers are): the engine alone, and the multi-tenant mix against the
 * gateway and PostgreSQL 15.
 */

const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

describe('round-trip benchmarks (--quick)', () => {
  it('measures select 1 in-process, through the slot and by postMessage', async () => {
    const results = await runEngineHop({ quick: true, log: () => undefined });
    expect(results.errors).toEqual([]);
    expect(results.rows.map((r) => r.path)).toEqual([
      'in-process PGlite',
      'worker, shared-memory slot',
      'worker, postMessage',
    ]);
    for (const row of results.rows) {
      expect(row.status).toBe('ok');
      expect(isNumber(row.p50Us) && isNumber(row.ratio) && isNumber(row.p50Ratio)).toBe(true);
    }
    expect(renderEngineHop(results)).toMatch(/p50 \/ in-process/);
  }, 180_000);

  it('runs the multi-tenant mix against the gateway and PostgreSQL without errors', async () => {
    const results = await runTenantMix({
      quick: true,
      seconds: 2,
      postgresBinDir: findTools().postgresBinDir,
      log: () => undefined,
    });
    expect(results.errors).toEqual([]);
    const gateway = results.rows.find((r) => r.system === 'gateway');
    expect(gateway?.status).toBe('ok');
    expect(gateway?.errors).toBe(0);
    expect(isNumber(gateway?.tps) && isNumber(gateway?.p99Ms) && isNumber(gateway?.peakMiB)).toBe(true);
    expect(gateway?.opened).toBe(gateway?.databases);
    const postgres = results.rows.find((r) => r.system === 'postgres');
    expect(postgres?.status).toBe(findTools().postgresBinDir ? 'ok' : 'not run');
    expect(renderTenantMix(results)).toMatch(/Multi-tenant mix/);
  }, 300_000);
});
