import { hasError } from '../wire/backend-scan.js';
import { leadingWords, statements } from './sql-lexer.js';

/**
 * Statements Postgres runs without taking the transaction's snapshot (PlannedStmtRequiresSnapshot:
 * transaction control, SET and RESET, SHOW). `SET TRANSACTION SNAPSHOT` sets one, so it is not
 * among them. A ROLLBACK that leaves a transaction open went back to a savepoint (or chained).
 */
const SNAPSHOT_FREE = new Set(['begin', 'start', 'set', 'reset', 'show', 'savepoint', 'release', 'rollback']);

/** Cheap first look: a text that does not begin with one of those words is not lexed at all. */
const SNAPSHOT_FREE_START = /^\s*(?:begin|start|set|reset|show|savepoint|release|rollback)\b/i;

function snapshotFree(sql: string): boolean {
  if (!SNAPSHOT_FREE_START.test(sql)) return false;
  // With standard_conforming_strings off (a client may turn it off) a backslash would end a
  // string where the lexer does not, hiding a statement that ran: such texts are never replayed.
  if (sql.includes('\\')) return false;
  const all = statements(sql);
  return (
    all.length > 0 &&
    all.every((tokens) => {
      const [first, second, third] = leadingWords(tokens, 3);
      if (!first || !SNAPSHOT_FREE.has(first)) return false;
      return !(first === 'set' && second === 'transaction' && third === 'snapshot');
    })
  );
}

/**
 * A client's open transaction while it has taken no snapshot yet: what it ran so far, if only
 * simple Queries of snapshot-free statements. A prepare another client borrows the session for
 * (its Parse is a query) would fix that snapshot, and the holder's SET TRANSACTION ISOLATION LEVEL
 * would then fail (25001, TypeORM and Sequelize send it after START TRANSACTION). Such a
 * transaction can be started over: nothing in it has happened but settings, and prepared
 * statements are not transactional.
 */
export class FreshTransaction {
  private texts: string[] | undefined;
  private before: string[] | undefined;

  /** Before each unit: anything but a snapshot-free Query (queryRan) ends the fresh state. */
  unitStarts(status: 'I' | 'T' | 'E'): void {
    this.before = status === 'I' ? [] : this.texts;
    this.texts = undefined;
    this.extra.length = 0;
  }

  /** SQL the gateway ran after the unit, part of the transaction (startup settings put back). */
  private readonly extra: string[] = [];

  alsoRan(sql: string): void {
    this.extra.push(sql);
  }

  /** Whether the unit under way may leave the transaction fresh (its texts are worth reading). */
  get watching(): boolean {
    return this.before !== undefined;
  }

  /**
   * A unit ran and left the client with `status`: `texts` is what simple Queries of them would
   * have done (the unit's own simple Query, or an extended unit's unnamed statements bound
   * without parameters: psycopg sends BEGIN so), undefined for anything else. An extended unit's
   * Parses (`parsed`) must take no snapshot either.
   */
  ran(texts: readonly string[] | undefined, status: 'I' | 'T' | 'E', parsed: readonly string[] = []): void {
    if (this.before && texts && this.staysFresh(texts, status, parsed))
      this.texts = [...this.before, ...texts, ...this.extra];
    this.before = undefined;
  }

  /** A simple Query ran and left the client with `status`. */
  queryRan(sql: string, status: 'I' | 'T' | 'E'): void {
    this.ran([sql], status);
  }

  /** Whether the transaction will still have taken no snapshot once this unit (which ran) is done. */
  staysFresh(texts: readonly string[], status: 'I' | 'T' | 'E', parsed: readonly string[] = []): boolean {
    return (
      status === 'T' && this.before !== undefined && texts.every(snapshotFree) && parsed.every(snapshotFree)
    );
  }

  /** Whether the transaction has taken no snapshot yet. */
  get fresh(): boolean {
    return this.texts !== undefined;
  }

  /**
   * A prepare borrowed the session while this transaction had taken no snapshot, and its Parse
   * took one: the transaction starts over as it began (rollback, then the same queries), so that
   * the client's SET TRANSACTION ISOLATION LEVEL still works. Borrowers only prepare, and
   * prepared statements outlive a rollback. True if any of it failed (queries that ran before
   * cannot fail now; if they did, the client hears 25P02 next).
   */
  async startOver(run: (sql: string) => Promise<Uint8Array>): Promise<boolean> {
    const texts = this.texts;
    if (!texts) return false;
    let failed = hasError(await run('ROLLBACK'));
    for (const sql of texts) failed ||= hasError(await run(sql));
    return failed;
  }
}
