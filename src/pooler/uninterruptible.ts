import { Frontend } from '../wire/protocol.js';
import { leadingWords, statements } from './sql-lexer.js';

/*
 * Units exempt from the client's own statement_timeout and CancelRequest: those that can only end
 * a transaction or be refused at once. Postgres never fails them for a timeout (aborting holds
 * interrupts); here an interrupt restarts the database, and its answer (57014 in a failed
 * transaction) would leave the client in the failed transaction it had just asked to leave. The
 * server's STATEMENT_TIMEOUT still applies.
 */

/** Cheap prefilter: outside a failed transaction, only a text with one of these words qualifies. */
const ENDS_TRANSACTION = /\b(?:rollback|abort)\b/i;

/**
 * A simple Query: a lone ROLLBACK or ABORT, or any lone statement in a failed transaction (there
 * Postgres only ends the transaction, goes back to a savepoint, or refuses it: 25P02).
 */
export function uninterruptibleQuery(sql: string, inFailedTransaction: boolean): boolean {
  if (!inFailedTransaction && !ENDS_TRANSACTION.test(sql)) return false;
  const all = statements(sql);
  if (all.length !== 1) return false;
  if (inFailedTransaction) return true;
  const [first] = leadingWords(all[0] ?? [], 1);
  return first === 'rollback' || first === 'abort';
}

/**
 * An extended unit up to its Sync, in a failed transaction, with at most one Execute (pgjdbc's
 * prepared ROLLBACK). A second Execute could run a statement after a ROLLBACK TO SAVEPOINT.
 */
export function uninterruptibleUnit(batch: readonly Uint8Array[], inFailedTransaction: boolean): boolean {
  if (!inFailedTransaction) return false;
  let executes = 0;
  for (const message of batch) if (message[0] === Frontend.Execute) executes++;
  return executes <= 1;
}
