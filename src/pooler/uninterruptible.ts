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
  // With standard_conforming_strings off (a client may turn it off) a backslash would end a
  // string where the lexer does not: such texts are timed as usual.
  if (sql.includes('\\')) return false;
  const all = statements(sql);
  if (all.length !== 1) return false;
  if (inFailedTransaction) return true;
  const [first] = leadingWords(all[0] ?? [], 1);
  return first === 'rollback' || first === 'abort';
}

/** What the extended unit under way ran so far, for uninterruptibleUnit (its parts may arrive apart). */
export interface UnitSoFar {
  executes: number;
  /** Portals bound in this unit to a lone ROLLBACK or ABORT. */
  rollbackPortals: Set<string>;
  /** An Execute of any other portal (one bound earlier in the transaction, or to anything else). */
  runsOther: boolean;
}

export const emptyUnit = (): UnitSoFar => ({ executes: 0, rollbackPortals: new Set(), runsOther: false });

const cstring = (m: Buffer, start: number) => m.toString('utf8', start, m.indexOf(0, start));

/**
 * Adds a batch of the unit (renamed: `isRollback` tells whether a backend statement is a lone
 * ROLLBACK or ABORT) to `unit`. The unnamed statement's text is known when the batch parses it.
 */
export function addBatch(
  unit: UnitSoFar,
  batch: readonly Buffer[],
  isRollback: (name: string) => boolean,
): void {
  let unnamedParse: Buffer | undefined;
  for (const m of batch) {
    if (m[0] === Frontend.Execute) {
      unit.executes++;
      if (!unit.rollbackPortals.has(cstring(m, 5))) unit.runsOther = true;
    } else if (m[0] === Frontend.Parse && m[5] === 0) {
      unnamedParse = m;
    } else if (m[0] === Frontend.Bind) {
      const portal = cstring(m, 5);
      const name = cstring(m, m.indexOf(0, 5) + 1);
      const rollback =
        name === ''
          ? unnamedParse !== undefined && uninterruptibleQuery(cstring(unnamedParse, 6), false)
          : isRollback(name);
      if (rollback) unit.rollbackPortals.add(portal);
      else unit.rollbackPortals.delete(portal);
    }
  }
}

/**
 * An extended unit that runs at most one statement: in a failed transaction any (as a simple
 * Query), otherwise a lone ROLLBACK or ABORT bound in the unit (pgjdbc's prepared ROLLBACK). A
 * second Execute could run a statement after a ROLLBACK TO SAVEPOINT.
 */
export function uninterruptibleUnit(unit: UnitSoFar, inFailedTransaction: boolean): boolean {
  if (unit.executes > 1) return false;
  return inFailedTransaction || (unit.executes === 1 && !unit.runsOther);
}
