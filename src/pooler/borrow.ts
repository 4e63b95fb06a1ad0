import type { Engine } from '../engine/engine.js';
import { hasError } from '../wire/backend-scan.js';
import { flushMessage, query } from '../wire/protocol.js';

/**
 * Runs a prepare-only unit (Parse/Describe/Close up to Sync) while another client's transaction
 * is parked, inside a savepoint so an error cannot abort that transaction. `reprepares` are
 * Parses of the client's statements the session had closed, sent first; `reprepared` is their
 * answer when one failed.
 */
export async function runBorrowed(
  engine: Engine,
  batch: Uint8Array,
  reprepares: Buffer[],
): Promise<{ response: Uint8Array; reprepared?: Uint8Array }> {
  await engine.exec(query('SAVEPOINT pglite_gateway_borrow'));
  const prepared =
    reprepares.length > 0 ? await engine.exec(Buffer.concat([...reprepares, flushMessage()])) : undefined;
  const response = await engine.exec(batch);
  const failed = hasError(response) || (prepared !== undefined && hasError(prepared));
  const undo = failed ? 'ROLLBACK TO SAVEPOINT pglite_gateway_borrow; ' : '';
  await engine.exec(query(`${undo}RELEASE pglite_gateway_borrow`));
  // A failed re-preparation made the engine skip the unit: its error is the answer.
  return prepared !== undefined && hasError(prepared) ? { response, reprepared: prepared } : { response };
}
