import type { DbOps } from './admin-client.js';

/** `db move` and `node drain` (cluster mode, issue 16): both run on the node's own server. */
export async function runClusterCommand(
  command: 'db move' | 'node drain',
  positionals: string[],
  ops: DbOps,
): Promise<void> {
  if (command === 'db move') {
    const [id, node] = positionals as [string, string];
    const moved = await ops.move(id, node);
    console.log(`moved database "${moved.database}" to ${moved.owner} (generation ${moved.generation})`);
    return;
  }
  const drained = await ops.drain();
  if (drained.databases.length === 0) console.log(`node ${drained.node} is draining; it owned no database`);
  let failed = 0;
  for (const d of drained.databases) {
    if (d.error) {
      failed++;
      console.log(`${d.database}: not moved: ${d.error}`);
    } else console.log(`${d.database}: moved to ${d.owner}`);
  }
  if (failed > 0) throw new Error(`${failed} of ${drained.databases.length} databases were not moved`);
}
