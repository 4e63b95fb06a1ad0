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

/** What the extended unit under way ran so far, for uninterruptibleUnit (its parts may arrive apart). */
export interface UnitSoFar {
  executes: number;
  /** Bind messages, and whether each bound a lone ROLLBACK or ABORT. */
  binds: number;
  otherBinds: number;
}

export const emptyUnit = (): UnitSoFar => ({ executes: 0, binds: 0, otherBinds: 0 });

const cstringEnd = (m: Uint8Array, start: number) => m.indexOf(0, start);

/**
 * Adds a batch of the unit (renamed: `textOf` gives a backend statement's text) to `unit`. The
 * unnamed statement's text is known when the batch parses it.
 */
export function addBatch(
  unit: UnitSoFar,
  batch: readonly Buffer[],
  textOf: (name: string) => string | undefined,
): void {
  let unnamed: string | undefined;
  for (const m of batch) {
    if (m[0] === Frontend.Execute) {
      unit.executes++;
    } else if (m[0] === Frontend.Parse && m[5] === 0) {
      unnamed = m.toString('utf8', 6, cstringEnd(m, 6));
    } else if (m[0] === Frontend.Bind) {
      const statementStart = cstringEnd(m, 5) + 1;
      const name = m.toString('utf8', statementStart, cstringEnd(m, statementStart));
      const text = name === '' ? unnamed : textOf(name);
      unit.binds++;
      if (text === undefined || !uninterruptibleQuery(text, false)) unit.otherBinds++;
    }
  }
}

/**
 * An extended unit that runs at most one statement: in a failed transaction any (as a simple
 * Query), otherwise a lone ROLLBACK or ABORT (pgjdbc's prepared ROLLBACK). A second Execute could
 * run a statement after a ROLLBACK TO SAVEPOINT.
 */
export function uninterruptibleUnit(unit: UnitSoFar, inFailedTransaction: boolean): boolean {
  if (unit.executes > 1) return false;
  return inFailedTransaction || (unit.binds > 0 && unit.otherBinds === 0);
}
