import { beforeAll, describe, expect, it } from 'vitest';
import type { ClusterHarness, HarnessNode } from '../helpers/cluster.js';
import { ackedMissing, connectTo, writeLoad } from '../helpers/cluster-load.js';
import { useSyncCluster } from '../helpers/cluster-suite.js';

/**
 * A rolling restart of a 3-node cluster (real processes, PostgreSQL 15 catalog, s3rver,
 * DURABILITY=sync, 2 s lease) under a 4-client write load with client-side sequence numbers:
 * each node in turn gets SIGTERM (its databases are shipped and handed over) and starts again.
 * A failure drill of a minute or more: `npm run test:chaos`.
 */

const PASSWORD = 'cluster-rolling-password-1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: ClusterHarness;

const harness = useSyncCluster('2s');
beforeAll(() => {
  cluster = harness();
});

describe('cluster: rolling restart', () => {
  it('a rolling restart of all 3 nodes under write load: no acknowledged commit lost, a reconnect or so per restart', async () => {
    const db = 'roll1';
    await cluster.anyNode().createDatabase(db, PASSWORD);
    const setup = await connectTo(cluster.anyNode(), db, PASSWORD);
    await setup.query('create table seqs (worker int, n int, primary key (worker, n))');
    await setup.end();
    let stop = false;
    let restarting: HarnessNode | undefined;
    const load = writeLoad(cluster, {
      db,
      password: PASSWORD,
      workers: 4,
      until: () => stop,
      avoid: () => restarting,
    });
    const progress = async (more: number) => {
      const from = load.acked.length;
      for (let i = 0; i < 300 && load.acked.length < from + more; i++) await sleep(100);
      return load.acked.length - from;
    };
    expect(await progress(20)).toBeGreaterThanOrEqual(20);
    const owners: (string | undefined)[] = [];
    const pending = [...cluster.nodes];
    while (pending.length > 0) {
      // The owner of the moment goes first, so the database changes hands more than once.
      const owner = await cluster.ownerOf(db);
      owners.push(owner?.id);
      const node = pending.includes(owner as HarnessNode)
        ? (owner as HarnessNode)
        : (pending[0] as HarnessNode);
      pending.splice(pending.indexOf(node), 1);
      restarting = node;
      await node.stop(); // SIGTERM: its databases are shipped and released before it exits
      await node.start();
      restarting = undefined;
      // The load goes on after each restart.
      expect(await progress(20)).toBeGreaterThanOrEqual(20);
    }
    stop = true;
    await load.done;
    const reconnects = load.failures.length;
    console.info(
      `rolling restart: ${load.acked.length} commits acknowledged, ${reconnects} failed statements (each followed by a reconnect), owners before each restart: ${owners.join(', ')}`,
    );
    expect(await ackedMissing(cluster, db, PASSWORD, load.acked)).toEqual([]);
    // Each restart costs a client at most a few failed attempts while the database changes hands
    // (a statement cut off by the SIGTERM, a reconnect that lands on a node still forwarding to
    // the leaving owner); a client that lost its way would fail until the attempts ran out.
    for (let worker = 0; worker < 4; worker++)
      expect(load.failures.filter((f) => f.worker === worker).length).toBeLessThanOrEqual(3 * 5);
  }, 240_000);
});
