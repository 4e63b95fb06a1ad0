import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // The failure drills and the benchmark harness run with `npm run test:long`
    // (vitest.long.config.ts; .ci/run runs both).
    exclude: [...configDefaults.exclude, 'test/chaos/**', 'test/bench/**'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
