import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest random weight) hashing: every node scores every database and the highest
 * score is the preferred owner. When a node joins or leaves, only the databases it wins or held
 * move, and every node computes the same answer from the same live set without coordination.
 * The catalog's placement row stays the truth; this only picks who should claim a free database.
 */
export function rendezvousOwner(databaseId: string, nodes: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1n;
  for (const node of nodes) {
    const score = createHash('sha256')
      .update(node)
      .update('\0')
      .update(databaseId)
      .digest()
      .readBigUInt64BE(0);
    // Ties (practically never) go to the smaller id so every node agrees.
    if (score > bestScore || (score === bestScore && best !== undefined && node < best)) {
      best = node;
      bestScore = score;
    }
  }
  return best;
}
