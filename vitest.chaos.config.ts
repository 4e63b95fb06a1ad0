import { defineConfig } from 'vitest/config';

/**
 * The long failure drills (`npm run test:chaos`, run by .ci/run after `npm run check`): an archive
 * outage of 20 s per durability mode, a rolling restart of a 3-node cluster under load, and the
 * cluster's failovers (kill -9, SIGSTOP past the lease, a catalog cut, SIGTERM, a move under load).
 * They take minutes of sleeping through faults, so they stay out of `npm test`.
 */
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
