import pg from 'pg';
import type { ClusterHarness, HarnessNode } from './cluster.js';

/**
 * Write load with client-side sequence numbers for the cluster's failure tests: each worker
 * inserts (worker, n) with n counting up, through a random live node, and reconnects (through
 * another random node) whenever a statement or a connection fails. What was acknowledged is kept,
 * so a test can check afterwards that every acknowledged commit is in the database.
 * The table is `seqs (worker int, n int, primary key (worker, n))`.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Acked {
  worker: number;
  n: number;
  /** performance.now() when the commit was acknowledged. */
  at: number;
}

export interface WriteLoad {
  acked: Acked[];
  /** Statements or connections that failed (each one is followed by a reconnect). */
  failures: { worker: number; at: number; message: string }[];
  done: Promise<void>;
  lastAck(): number;
}

export async function connectTo(node: HarnessNode, db: string, password: string, extra: object = {}) {
  const c = new pg.Client({ ...node.pgConfig(db, password), ...extra });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

export function writeLoad(
  cluster: ClusterHarness,
  opts: {
    db: string;
    password: string;
    workers: number;
    until: () => boolean;
    /** A node new connections must not go to (the one being killed or restarted). */
    avoid: () => HarnessNode | undefined;
  },
): WriteLoad {
  const acked: Acked[] = [];
  const failures: WriteLoad['failures'] = [];
  let lastAck = 0;
  const run = async (worker: number) => {
    let n = 0;
    let client: pg.Client | undefined;
    // Bounded: a load that cannot make progress ends after this many attempts.
    for (let attempts = 0; !opts.until() && attempts < 2000; attempts++) {
      try {
        if (!client) {
          const node = cluster.anyNode(opts.avoid());
          client = await connectTo(node, opts.db, opts.password, {
            query_timeout: 4000,
            connectionTimeoutMillis: 15_000,
          });
        }
        n++;
        await client.query('insert into seqs (worker, n) values ($1, $2)', [worker, n]);
        lastAck = performance.now();
        acked.push({ worker, n, at: lastAck });
      } catch (err) {
        failures.push({ worker, at: performance.now(), message: (err as Error).message });
        client?.end().catch(() => undefined);
        client = undefined;
        await sleep(100);
      }
    }
    await client?.end().catch(() => undefined);
  };
  const done = Promise.all(Array.from({ length: opts.workers }, (_, i) => run(i))).then(() => undefined);
  return { acked, failures, done, lastAck: () => lastAck };
}

/** The acknowledged commits that are not in the database (read through any live node). */
export async function ackedMissing(
  cluster: ClusterHarness,
  db: string,
  password: string,
  acked: readonly { worker: number; n: number }[],
) {
  const c = await connectTo(cluster.anyNode(), db, password);
  const { rows } = await c.query<{ worker: number; n: number }>('select worker, n from seqs');
  await c.end();
  const present = new Set(rows.map((r) => `${r.worker}:${r.n}`));
  return acked.filter((a) => !present.has(`${a.worker}:${a.n}`));
}
