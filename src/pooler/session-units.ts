import type { GatewayError } from '../errors.js';
import { backendMessages, countBeforeError, firstRow, hasError, splitCopyIn } from '../wire/backend-scan.js';
import {
  Backend,
  errorResponse,
  Frontend,
  flushMessage,
  query,
  readErrorFields,
  readyForQuery,
  syncMessage,
} from '../wire/protocol.js';
import { CopyIn } from './copy-in.js';
import { FreshTransaction } from './fresh-transaction.js';
import {
  copyInExtended,
  deallocateNotAlone,
  FAST_PATH_FUNCTIONS,
  FUNCTION_CALL_UNSUPPORTED,
  forgetAllExtended,
  forgetAllInBatch,
  resultTypeChanged,
} from './session-errors.js';
import { SessionExecutor } from './session-executor.js';
import { commandComplete, finalReady, firstErrorMessage, replaceParseText } from './session-messages.js';
import { resetSettings, rollsBackToSavepoint, settingsChangedBy } from './setting-statements.js';
import { deallocatedNames, forgetAll, judgeStatement } from './statement-guard.js';
import { closeStatements, renameStatement } from './statement-renames.js';
import { changedResults, closeStatement, describeStatement, failingParse } from './statement-types.js';
import { parseName } from './statements.js';
import { uninterruptibleQuery } from './uninterruptible.js';

/**
 * The middle of a client session: shaping what a unit sends and what comes back. Replies are
 * delivered with the settings read back before their ReadyForQuery (and a client's startup
 * settings restored after RESET); statements are renamed, guarded, re-prepared and forgotten;
 * COPY FROM STDIN is collected and run whole. Below it SessionExecutor runs things on the
 * engine; above it ClientSession (session.ts) keeps the queue and the turns.
 */
/** Named statements that change settings remembered per client at most. */
const MAX_SETTING_STATEMENTS = 10_000;

export abstract class SessionUnits extends SessionExecutor {
  /** This client's transaction while it has taken no snapshot (see session.ts startOver). */
  protected readonly fresh = new FreshTransaction();
  /**
   * Writes a unit's response. After a statement that may have changed settings, they are read
   * back first, so ParameterStatus reaches the client before the ReadyForQuery, as Postgres does.
   * Inside a transaction the values are read again once it ends (a ROLLBACK may undo them).
   * `texts` is what the unit ran, as FreshTransaction.ran takes it, if it may be fresh.
   */
  protected async deliver(
    response: Uint8Array,
    texts?: { runs: readonly string[]; parsed?: readonly string[] },
  ): Promise<void> {
    if (hasError(response) && this.lostStatement(response)) this.shared.statementsEpoch++;
    const ready = this.inUnit || this.copy || this.status === 'E' ? undefined : finalReady(response);
    if (!this.settings.due(this.status) || ready === undefined) {
      // A reset in a failed transaction is undone with it.
      if (this.status === 'E') this.settings.resets.take(true);
      this.write(response);
      return;
    }
    this.write(response.subarray(0, ready));
    const restored = await this.restoreStartupSettings(this.execFailed);
    if (restored) this.fresh.alsoRan(restored);
    // A transaction that has taken no snapshot yet (BEGIN; SET LOCAL ...) may still be given
    // its isolation level: read by SHOW, which takes none.
    await this.readBackSettings(
      texts !== undefined && this.fresh.staysFresh(texts.runs, this.status, texts.parsed),
    );
    this.write(response.subarray(ready));
  }

  /**
   * Prepares again the client's statements that the session closed (cap) and that the batch about
   * to run uses; the batch begins with the first message using one (step), so the messages
   * before it have run, as in Postgres. Parse + Flush keeps the client's unit open; if a Parse
   * fails, the client gets that error, and the session skips the client's messages up to its
   * Sync, as if its own message had failed.
   */
  protected async reprepare(): Promise<void> {
    const { parses, checks } = this.names.takeReprepares();
    if (parses.length === 0) return;
    // After an error in the unit the engine skips everything up to the Sync, these Parses too.
    if (this.inUnit && this.unitFailed) {
      for (const parse of parses) this.names.notInSession(parseName(parse));
      return;
    }
    const describes = checks.map(([backend]) => describeStatement(backend));
    const response = await this.exec(Buffer.concat([...parses, ...describes, flushMessage()]));
    if (hasError(response)) return this.repreparationFailed(parses, response);
    const changed = changedResults(response, checks);
    if (changed.length === 0) return;
    // As Postgres fails a prepared statement whose table changed under it (its plan must not
    // change result type): closed again, so every use tries and fails the same way until the
    // client prepares it anew. A failing Parse makes the session skip the unit up to its Sync.
    for (const backend of changed) this.names.notInSession(backend);
    await this.exec(Buffer.concat([...changed.map(closeStatement), failingParse(), flushMessage()]));
    this.write(errorResponse(resultTypeChanged()));
  }

  /**
   * Re-preparing `parses` failed (`response`): the client hears why, and the failing statement
   * and those after it (skipped) are prepared again at their next use, failing there again.
   */
  protected repreparationFailed(parses: readonly Buffer[], response: Uint8Array): void {
    const done = countBeforeError(response, Backend.ParseComplete);
    for (const parse of parses.slice(done)) this.names.notInSession(parseName(parse));
    const error = firstErrorMessage(response);
    if (error) this.write(error);
  }

  /**
   * Text that reaches the engine and names DEALLOCATE (in a DO block, a function body, a string
   * for EXECUTE) may drop any client's statements: every client checks its own before its next
   * extended unit. A DEALLOCATE the text does not show is caught by its 26000 (see deliver).
   */
  protected noteMayDeallocate(sql: string): void {
    if (/deallocate/i.test(sql)) this.shared.statementsEpoch++;
  }

  /** A 26000 naming one of this client's statements: the session lost it behind our back. */
  private lostStatement(response: Uint8Array): boolean {
    for (const m of backendMessages(response)) {
      if (m.code !== 0x45) continue;
      const fields = readErrorFields(response.subarray(m.start, m.end));
      const name = /"([^"]*)"/.exec(fields.get('M') ?? '')?.[1];
      if (fields.get('C') === '26000' && name !== undefined && this.names.owns(name)) return true;
    }
    return false;
  }

  /**
   * Which of this client's statements the session still has; the others are prepared again. Runs
   * before a unit's messages are renamed, when a statement may have dropped some (see above).
   */
  protected async checkStatements(): Promise<void> {
    // In a failed transaction nothing can be read, nor in the middle of an extended unit (a Query
    // there would end it): try again at the next unit.
    if (this.statementsEpoch === this.shared.statementsEpoch || this.status === 'E' || this.inUnit) return;
    this.statementsEpoch = this.shared.statementsEpoch;
    if (this.names.size === 0) return;
    const sql = `SELECT pg_catalog.string_agg(name, ',') FROM pg_catalog.pg_prepared_statements WHERE name LIKE '${this.names.likePattern}'`;
    const [list] = firstRow(await this.exec(query(sql))) ?? [];
    this.names.keepOnly(new Set(list ? list.split(',') : []));
  }

  /**
   * DISCARD ALL / DEALLOCATE ALL would drop every client's statements: drop only ours. DISCARD ALL
   * also takes this client's settings back to those it connected with (RESET ALL would restore the
   * startup options too) and ends its LISTENs; the read-back reports what changed.
   */
  protected async forgetStatements(isDiscard: boolean, replies?: Buffer): Promise<void> {
    const names = this.names.backendNames();
    this.names.forgetAll();
    if (names.length > 0) await this.exec(closeStatements(names));
    if (isDiscard) {
      await this.resetSettings();
      this.settings.reset();
      await this.switchTo();
      const unlisten = this.listening.leaveSql();
      if (unlisten) await this.exec(query(unlisten));
    }
    const tag = isDiscard ? 'DISCARD ALL' : 'DEALLOCATE ALL';
    await this.deliver(Buffer.concat([replies ?? commandComplete(tag), readyForQuery(this.status)]));
  }

  /**
   * `DEALLOCATE name` of one of this client's statements: the session knows it by its backend
   * name, so it is closed under that one (Close works inside a transaction too), unless the
   * session already closed it (cap), and forgotten, so the client may Parse the name again.
   */
  protected async deallocate(name: string, replies?: Buffer): Promise<void> {
    const backend = this.names.closeNow(name);
    if (this.names.owns(backend)) await this.exec(closeStatements([backend]));
    await this.deliver(Buffer.concat([replies ?? commandComplete('DEALLOCATE'), readyForQuery(this.status)]));
  }

  /**
   * The text's `DEALLOCATE name` naming a statement this client prepared through the protocol.
   * Other names are left to the database: an SQL-level PREPARE of that name (not isolated
   * between clients, README), or Postgres' own 26000 for a name nobody prepared.
   */
  private deallocatesOwn(sql: string): { name: string; alone: boolean } | undefined {
    const found = deallocatedNames(sql);
    const name = found?.names.find((n) => this.names.has(n));
    return found && name !== undefined ? { name, alone: found.alone } : undefined;
  }

  /** Renames statements and guards what a Parse may run. */
  /** RESETs among the Parse messages of the batch being built (see noteParsedResets). */
  private readonly parsedResets: ReturnType<typeof resetSettings>[] = [];

  /**
   * The batch's Parse messages' RESETs count when the batch executes something: a unit that only
   * prepares (PQprepare) resets nothing. A named RESET executed later is noted at its Bind.
   */
  protected noteParsedResets(batch: readonly Buffer[]): void {
    if (batch.some((m) => m[0] === Frontend.Execute))
      for (const r of this.parsedResets) this.settings.resets.note(r);
    this.parsedResets.length = 0;
  }

  /**
   * The client's named statements that may change settings (`select set_config('app.x', $1,
   * false)` prepared once, executed with every tenant; a prepared `RESET`): each Bind of one is
   * noted as its Parse was.
   */
  private readonly settingStatements = new Map<
    string,
    { change: { custom: string[] }; resets: ReturnType<typeof resetSettings> }
  >();

  protected prepareExtended(message: Buffer): Buffer {
    if (message[0] === Frontend.Bind && this.settingStatements.size > 0) {
      const portalEnd = message.indexOf(0, 5);
      const name = message.toString('utf8', portalEnd + 1, message.indexOf(0, portalEnd + 1));
      const statement = this.settingStatements.get(name);
      if (statement) {
        this.settings.noteStatement(statement.change);
        this.parsedResets.push(statement.resets);
      }
    } else if (message[0] === Frontend.Parse) {
      const nameEnd = message.indexOf(0, 5);
      const textEnd = message.indexOf(0, nameEnd + 1);
      const sql = message.toString('utf8', nameEnd + 1, textEnd);
      const change = settingsChangedBy(sql);
      const resets = change && resetSettings(sql);
      this.settings.noteStatement(change);
      if (rollsBackToSavepoint(sql)) this.settings.noteRollbackTo();
      if (nameEnd > 5) {
        const name = message.toString('utf8', 5, nameEnd);
        this.settingStatements.delete(name);
        if (change) this.settingStatements.set(name, { change, resets });
        // As many as a client may keep statements (statements.ts); the oldest go first.
        if (this.settingStatements.size > MAX_SETTING_STATEMENTS)
          this.settingStatements.delete(this.settingStatements.keys().next().value as string);
      }
      this.listening.note(sql);
      this.parsedResets.push(resets);
      const verdict = judgeStatement(sql, this.database);
      const refusal =
        verdict.kind === 'copy-in'
          ? copyInExtended()
          : verdict.kind === 'refuse'
            ? verdict.error
            : forgetAll(sql)
              ? forgetAllExtended()
              : this.deallocatesOwn(sql) // alone in its unit, it never gets here (step)
                ? deallocateNotAlone()
                : undefined;
      // Failing inside the engine keeps the transaction state the client sees and the real one equal.
      if (refusal) message = replaceParseText(message, nameEnd, this.refusals.sql(refusal));
      else this.noteMayDeallocate(sql);
    } else if (message[0] === Frontend.Describe && message[5] === 0x53) {
      const name = message.toString('utf8', 6, message.indexOf(0, 6));
      this.described.describing(name, this.names.definition(name));
    }
    return renameStatement(message, this.names);
  }

  /**
   * Answers a simple Query with a gateway error as Postgres would answer its own: outside a
   * transaction directly; inside one the engine runs a statement that fails, so the transaction
   * is aborted there too, and its error is replaced by ours on the way out (replaceRefusals).
   */
  protected async raise(error: GatewayError): Promise<void> {
    if (this.status === 'I') {
      this.write(Buffer.concat([errorResponse(error), readyForQuery('I')]));
      return;
    }
    await this.deliver(await this.exec(query(this.refusals.sql(error))));
  }

  /**
   * Learns the CopyInResponse without starting a COPY that has no data (which kills PGlite): the
   * statement runs with an immediate CopyFail, inside a savepoint when a transaction is open.
   */
  protected async beginCopy(message: Buffer): Promise<void> {
    const inTransaction = this.status === 'T';
    if (inTransaction) await this.exec(query('SAVEPOINT pglite_gateway_copy'));
    const response = await this.exec(Buffer.concat([message, CopyIn.fail('gateway probe')]));
    if (inTransaction) {
      await this.exec(query('ROLLBACK TO SAVEPOINT pglite_gateway_copy; RELEASE pglite_gateway_copy'));
    }
    const { copyIn } = splitCopyIn(response);
    if (!copyIn) return this.deliver(response);
    this.copy = new CopyIn(message, this.opts.maxCopyBytes);
    this.inUnit = true;
    this.write(copyIn);
  }

  protected async runCopy(outcome: { messages: Buffer }): Promise<void> {
    this.copy = undefined;
    const response = await this.exec(outcome.messages, false, true);
    await this.deliver(splitCopyIn(response).rest);
  }

  /**
   * Ends the open unit with a Sync of the gateway's own. What that Sync answers reaches the client
   * minus its ReadyForQuery: a commit that fails there (a deferred constraint) or a notification
   * the commit sends is the client's to hear. Postgres would have run the Query in the unit's
   * transaction, so a failed commit fails the Query too: it is not run, and the error with a
   * ReadyForQuery answers it. True when the Query was answered so.
   */
  protected async endUnitBeforeQuery(): Promise<boolean> {
    const ended = await this.exec(syncMessage());
    const failed = hasError(ended);
    const ready = finalReady(ended) ?? ended.length;
    if (ready > 0) this.write(ended.subarray(0, ready));
    if (!failed) return false;
    this.write(readyForQuery(this.status));
    return true;
  }

  protected async runQuery(message: Buffer): Promise<void> {
    const sql = message.toString('utf8', 5, message.length - 1);
    this.settings.noteStatement(settingsChangedBy(sql));
    if (rollsBackToSavepoint(sql)) this.settings.noteRollbackTo();
    const verdict = judgeStatement(sql, this.database);
    if (verdict.kind === 'refuse') return this.raise(verdict.error);
    const forget = forgetAll(sql);
    if (forget && !forget.alone) return this.raise(forgetAllInBatch());
    // Beside other statements, a DEALLOCATE of one of ours is refused as DEALLOCATE ALL is: the
    // lexer gives no positions to rewrite the name in place, and the gateway may forget the
    // statement only if the DEALLOCATE ran, which an earlier statement failing would prevent.
    const deallocate = this.deallocatesOwn(sql);
    if (deallocate && !deallocate.alone) return this.raise(deallocateNotAlone());
    // Only a text that runs may subscribe its client.
    this.listening.note(sql);
    if (verdict.kind === 'copy-in') return this.beginCopy(message);
    // DEALLOCATE ALL may run in a transaction, DISCARD ALL may not (the database says so: 25001);
    // in a failed transaction both go on to be refused (25P02).
    if (forget && this.status !== 'E' && (forget.kind === 'deallocate' || this.status === 'I')) {
      return this.forgetStatements(forget.kind === 'discard');
    }
    // In a failed transaction it goes on to the database, which refuses it (25P02) as Postgres.
    if (deallocate && this.status !== 'E') return this.deallocate(deallocate.name);
    this.noteMayDeallocate(sql);
    // Only a text that runs may reset (the extended protocol's are left to the database).
    this.settings.resets.note(resetSettings(sql));
    const timed = !uninterruptibleQuery(sql, this.status === 'E');
    await this.deliver(await this.exec(message, true, timed), { runs: [sql] });
    this.fresh.queryRan(sql, this.status);
  }

  /** A FunctionCall: run as a unit of its own when it calls a large-object function. */
  protected async runFunctionCall(message: Buffer): Promise<void> {
    if (!FAST_PATH_FUNCTIONS.has(message.readUInt32BE(5))) return this.raise(FUNCTION_CALL_UNSUPPORTED());
    await this.deliver(await this.exec(message, true));
  }
}
