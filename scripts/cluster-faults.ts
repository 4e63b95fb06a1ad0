/**
 * The cluster fault-injection harness from the command line: starts N real nodes (PostgreSQL 15
 * catalog, s3rver), creates a database, writes through every node, then applies the faults named
 * on the command line to the database's owner and reports what clients saw.
 *
 *   tsx scripts/cluster-faults.ts [--nodes 3] [--lease 2s] [--durability sync] [kill|pause|cut-catalog|latency]...
 *
 * `latency` measures `select 1` round trips on the owner directly and through another node (forwarded).
 *
 * Each fault is bounded (a pause or a cut lasts 2 × LEASE_TTL, then heals). Logs of a node go to
 * stdout on failure (`--verbose`: always). Every node's dashboard (listed at start) offers the
 * harness's faults too (FAULT_CONTROL_URL); `--hold 10m` keeps the cluster up that long at the end
 * to try them by hand.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { parseDurationMs } from '../src/units.js';
import { type HarnessNode, startClusterHarness } from '../test/helpers/cluster.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    nodes: { type: 'string', default: '3' },
    lease: { type: 'string', default: '2s' },
    durability: { type: 'string', default: 'sync' },
    verbose: { type: 'boolean', default: false },
    hold: { type: 'string', default: '0s' },
  },
});
const leaseMs = parseDurationMs(values.lease);
const PASSWORD = 'fault-script-password';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cluster = await startClusterHarness({
  size: Number(values.nodes),
  leaseTtl: values.lease,
  env: { DURABILITY: values.durability },
});
const write = async (node: HarnessNode, sql: string) => {
  const c = new pg.Client({ ...node.pgConfig('faults', PASSWORD), query_timeout: 5000 } as pg.ClientConfig);
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.query(sql)).rows;
  } finally {
    await c.end().catch(() => undefined);
  }
};
/** Sequential `select 1` round trips on one connection (after a warm-up): mean and p50/p99 in µs. */
const selectLatency = async (node: HarnessNode, n = 2000) => {
  const c = new pg.Client(node.pgConfig('faults', PASSWORD));
  await c.connect();
  try {
    for (let i = 0; i < 200; i++) await c.query('select 1');
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await c.query('select 1');
      times.push((performance.now() - t) * 1000);
    }
    times.sort((a, b) => a - b);
    const at = (q: number) => Math.round(times[Math.floor(q * (times.length - 1))] as number);
    return { meanUs: Math.round(times.reduce((a, b) => a + b, 0) / n), p50Us: at(0.5), p99Us: at(0.99) };
  } finally {
    await c.end();
  }
};
const report = (what: string) => console.log(`[${new Date().toISOString()}] ${what}`);
let failed = false;
for (const node of cluster.nodes)
  report(
    `${node.id}: dashboard http://127.0.0.1:${node.adminPort}/dashboard (faults via ${cluster.control.url})`,
  );
try {
  await cluster.nodes[0]?.createDatabase('faults', PASSWORD);
  await write(cluster.anyNode(), 'create table t (n serial primary key, by text)');
  for (const node of cluster.nodes) await write(node, `insert into t (by) values ('${node.id}')`);
  report(`written through ${cluster.nodes.length} nodes; owner ${(await cluster.ownerOf('faults'))?.id}`);
  for (const fault of positionals) {
    const owner = await cluster.ownerOf('faults');
    if (!owner) throw new Error('no owner');
    if (fault === 'latency') {
      const entry = cluster.nodes.find((n) => n !== owner) as HarnessNode;
      for (const [name, node] of [
        ['direct', owner],
        ['forwarded', entry],
        ['direct', owner],
        ['forwarded', entry],
      ] as const)
        report(`${name}: ${JSON.stringify(await selectLatency(node))}`);
      continue;
    }
    const started = performance.now();
    if (fault === 'kill') await owner.kill9();
    else if (fault === 'pause') owner.pause();
    else if (fault === 'cut-catalog') owner.faults.catalog.fault('blackhole', leaseMs * 2);
    else throw new Error(`unknown fault ${fault}`);
    report(`${fault} ${owner.id}`);
    for (let i = 0; i < 200; i++) {
      try {
        const rows = await write(
          cluster.anyNode(owner),
          `insert into t (by) values ('after ${fault}') returning n`,
        );
        report(
          `served again after ${Math.round(performance.now() - started)} ms (row ${JSON.stringify(rows)}); owner now ${(await cluster.ownerOf('faults'))?.id}`,
        );
        break;
      } catch (err) {
        if (i === 199) throw err;
        await sleep(200);
      }
    }
    if (fault === 'pause') {
      await sleep(Math.max(0, leaseMs * 2 - (performance.now() - started)));
      owner.resume();
    }
    if (fault === 'kill') await owner.start();
    await sleep(leaseMs);
  }
  report(`rows: ${JSON.stringify(await write(cluster.anyNode(), 'select count(*)::int as n from t'))}`);
  const holdMs = parseDurationMs(values.hold);
  if (holdMs > 0) {
    report(`holding the cluster for ${values.hold} (Ctrl-C ends it)`);
    await sleep(holdMs);
  }
} catch (err) {
  failed = true;
  console.error(err);
} finally {
  if (failed || values.verbose) for (const n of cluster.nodes) console.log(`--- ${n.id}\n${n.tail(400)}`);
  await cluster.close();
}
process.exit(failed ? 1 : 0);
