import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // The failure drills and the benchmark harness run with `npm run test:long`
    // (vitest.long.config.ts; .ci/run runs both).
    exclude: [...configDefaults.exclude, 'test/chaos/**', 'test/bench/**'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    // Vitest's default is one worker per core less one: one file at a time on a 2-core machine.
    // Most integration files wait (timeouts, leases, restarts) more than they compute, so three
    // at a time take the suite from ~28 to ~15 minutes there. Tests pick free ports and temp
    // directories, so files are independent; `--maxWorkers` on the command line overrides this.
    maxWorkers: 3,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
