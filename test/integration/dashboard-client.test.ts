import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { dashboardScript } from '../../src/http/dashboard/bundle.js';

/**
 * The dashboard's browser code (dashboard/) lives outside the server's tsconfig (it needs DOM
 * types, which would leak into the server's globals): it is typechecked here with its own
 * tsconfig, and bundled the way the server bundles it.
 */

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('dashboard client', () => {
  it('typechecks with its own tsconfig (DOM, strict)', { timeout: 120_000 }, async () => {
    const result = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile(
        process.execPath,
        [path.join(repo, 'node_modules/typescript/bin/tsc'), '-p', 'dashboard/tsconfig.json'],
        { cwd: repo, timeout: 110_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: stdout + stderr }),
      );
    });
    expect(result.output).toBe('');
    expect(result.code).toBe(0);
  });

  it('bundles into one script with no imports left', async () => {
    const script = await dashboardScript();
    expect(script.length).toBeGreaterThan(1000);
    expect(script).not.toMatch(/^\s*import[\s{]/m);
    expect(script).toContain('/v1/stats/stream');
  });
});
