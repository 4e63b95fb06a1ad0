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
  /** Every Parse of the unit (fresh-transaction.ts: a Parse of a query takes the snapshot). */
  parses: Buffer[];
  /**
   * The Parse of each statement the unit executed, when each was the unnamed statement parsed in
   * the unit and bound without parameters: a simple Query of its text would have done the same.
   * Undefined once anything else ran.
   */
  runs: Buffer[] | undefined;
  /** The unit's unnamed Parse, and the portals bound to it without parameters. */
  unnamed: Buffer | undefined;
  readonly portals: Map<string, Buffer>;
}

export const emptyUnit = (): UnitSoFar => ({
  executes: 0,
  rollbackPortals: new Set(),
  runsOther: false,
  parses: [],
  runs: [],
  unnamed: undefined,
  portals: new Map(),
});

/** Statements of one unit at most that a transaction's start-over may replay. */
const MAX_REPLAYED = 64;

function notReplayable(unit: UnitSoFar): void {
  unit.runs = undefined;
  unit.parses.length = 0;
}

/** A Parse message's query text. */
export const parseText = (m: Buffer): string => cstring(m, m.indexOf(0, 5) + 1);

/** The texts of a unit for FreshTransaction.ran: those it ran as simple Queries would, and those it parsed. */
export function unitTexts(unit: UnitSoFar): { runs: string[]; parsed: string[] } | undefined {
  return unit.runs && { runs: unit.runs.map(parseText), parsed: unit.parses.map(parseText) };
}

/** A Bind's parameter count (after the portal, statement and format codes). */
function bindParameters(m: Buffer, statementEnd: number): number {
  const formats = m.readUInt16BE(statementEnd + 1);
  return m.readUInt16BE(statementEnd + 3 + 2 * formats);
}

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
      const portal = cstring(m, 5);
      if (!unit.rollbackPortals.has(portal)) unit.runsOther = true;
      const parse = unit.portals.get(portal);
      if (parse) unit.runs?.push(parse);
      else notReplayable(unit);
    } else if (m[0] === Frontend.Parse) {
      // Kept only while the unit may be replayed, and only for a few statements (a pipeline of
      // thousands is no fresh transaction's): the input queue no longer counts these bytes.
      if (unit.runs && unit.parses.push(m) > MAX_REPLAYED) notReplayable(unit);
      if (m[5] === 0) unnamedParse = unit.unnamed = m;
    } else if (m[0] === Frontend.Bind) {
      const portal = cstring(m, 5);
      const statementEnd = m.indexOf(0, m.indexOf(0, 5) + 1);
      const name = cstring(m, m.indexOf(0, 5) + 1);
      if (name === '' && unit.unnamed && bindParameters(m, statementEnd) === 0)
        unit.portals.set(portal, unit.unnamed);
      else unit.portals.delete(portal);
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
