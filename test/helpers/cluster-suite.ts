import { afterAll, beforeAll, inject } from 'vitest';
import { type ClusterHarness, startClusterHarness } from './cluster.js';

/**
 * A 3-node cluster in DURABILITY=sync for one test file: started before its tests, closed after
 * (CLUSTER_LOG_DIR=/some/dir keeps the nodes' logs of a run for a post-mortem). Returns a getter,
 * since the harness exists only once beforeAll has run.
 */
export function useSyncCluster(leaseTtl: string): () => ClusterHarness {
  let cluster: ClusterHarness | undefined;
  beforeAll(async () => {
    cluster = await startClusterHarness({
      size: 3,
      leaseTtl,
      env: { DURABILITY: 'sync', QUERY_WAIT_TIMEOUT: '60s' },
      templateDir: inject('templateDir'),
    });
  }, 240_000);
  afterAll(async () => {
    if (process.env.CLUSTER_LOG_DIR) await cluster?.dumpLogs(process.env.CLUSTER_LOG_DIR);
    await cluster?.close();
  }, 60_000);
  return () => {
    if (!cluster) throw new Error('the cluster harness is not started yet');
    return cluster;
  };
}
