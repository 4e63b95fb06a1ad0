import { describe, expect, it } from 'vitest';
import { runHttpBench } from '../../bench/http-bench.js';
import { TRANSPORTS } from '../../bench/http-drivers.js';
import { renderHttpReport } from '../../bench/http-report.js';

/** `npm run bench -- --only http` in-process, briefly (0.3 s per row): every transport measures. */
describe('HTTP front door benchmark (short rows)', () => {
  it('measures select 1 and TPC-B over TCP, /sql (HTTP/1.1, HTTP/2) and WebSocket', async () => {
    const results = await runHttpBench({ seconds: 0.3, log: () => {} });
    expect(results.errors).toEqual([]);
    expect(results.rows).toHaveLength(2 * 2 * TRANSPORTS.length);
    for (const row of results.rows) {
      expect({ ...row, error: row.error ?? '' }).toMatchObject({ status: 'ok', error: '' });
      expect(row.transactions).toBeGreaterThan(0);
    }
    const report = renderHttpReport(results);
    expect(report).toContain('/sql HTTP/2');
    expect(report).not.toContain('failed');
  }, 180_000);
});
