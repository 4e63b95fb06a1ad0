import { defineConfig } from 'vitest/config';

/**
 * The long suites (`npm run test:long`, run by .ci/run after `npm run check`), kept out of
 * `npm test` so it stays near 20 minutes:
 * - test/chaos: the failure drills, an archive outage of 20 s per durability mode, a rolling
 *   restart of a 3-node cluster under load, and the cluster's failovers (kill -9, SIGSTOP past
 *   the lease, a catalog cut, SIGTERM, a move under load); minutes of sleeping through faults;
 *   and bank transfers from many clients under cancels, timeouts and dropped sockets.
 * - test/bench: the benchmark harness in --quick form (it produces every number and cleans up;
 *   it asserts no timing).
 * `npm run test:chaos` runs the drills alone.
 */
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts', 'test/bench/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    // One file at a time: the drills time leases, outages and restarts against the machine.
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
