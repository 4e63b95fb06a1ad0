import type { Database } from '../databases/database.js';
import { EngineBrokenError, EngineKilledError } from '../engine/engine.js';
import { errors, GatewayError } from '../errors.js';
import { backendMessages, firstRow, hasError, lastReadyStatus } from '../wire/backend-scan.js';
import {
  errorResponse,
  Frontend,
  flushMessage,
  query,
  readErrorFields,
  readyForQuery,
  type TransactionStatus,
} from '../wire/protocol.js';
import { ArchiveGate, mayAcknowledgeCommit } from './archive-gate.js';
import { ClientListening } from './client-listening.js';
import type { CopyIn } from './copy-in.js';
import { Refusals } from './refusals.js';
import { COMMIT_GRACE_MS, RunningRequest } from './running-request.js';
import { copyInExtended, ENGINE_BROKE, Interrupted, interrupted, quoteIdent } from './session-errors.js';
import {
  commandComplete,
  finalReady,
  findError,
  firstErrorMessage,
  replaceParseText,
} from './session-messages.js';
import type { SessionOptions } from './session-options.js';
import { ClientSettings, isServableEncoding } from './settings.js';
import { type SharedSession, sharedSession } from './shared-session.js';
import { forgetAll, judgeStatement, mayChangeSettings, resetSettings } from './statement-guard.js';
import { closeStatements, renameStatement, restoreNames, StatementNames } from './statements.js';

/**
 * The half of a client session that runs its units on the database's shared session: switching
 * the session to this client's settings, executing with statement timeout and interruption,
 * recovering after the database restarted, and shaping replies (statement names, refusals,
 * notifications, settings read-back). ClientSession (session.ts) adds the queue and the turns.
 */
/** DISCARD ALL / DEALLOCATE ALL act on the session, not one client: done only as a query of their own. */
const forgetAllExtended = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'DISCARD ALL and DEALLOCATE ALL are supported only as a simple query of their own',
    'forget_all_extended',
  );
export const forgetAllInBatch = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'DISCARD ALL and DEALLOCATE ALL must be sent as a query of their own',
    'forget_all_batch',
    'send the statement alone, with nothing else in the query string',
  );

/** The longest delay Node's timers keep (2^31-1 ms); a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export abstract class SessionExecutor {
  protected readonly owner = Symbol('client');
  protected status: TransactionStatus = 'I';
  /** Messages were sent since the last ReadyForQuery (an extended-protocol unit is open). */
  protected inUnit = false;
  /** The open unit had an error: the engine skips to its Sync, and so does a Query (see step). */
  protected unitFailed = false;
  protected copy: CopyIn | undefined;
  /** The database generation this client's statements and state belong to. */
  protected generation: number;
  /** The shared session's statementsEpoch when this client last checked its statements. */
  private statementsEpoch: number;
  /** Why this client's running statement is being interrupted, when it is. */
  protected interrupting: string | undefined;
  protected execInFlight = false;
  private readonly request = new RunningRequest();
  /** The batch being executed ends a unit (Query or Sync), so an error answer ends with ReadyForQuery. */
  protected batchEndsUnit = true;
  /** After an interrupted extended unit, the rest of it up to Sync is skipped, as Postgres does. */
  protected skipUntilSync = false;
  protected readonly names: StatementNames;
  /** Gateway errors to raise in place of the engine's errors for refusal markers. */
  protected readonly refusals = new Refusals();
  /** Its channels; notifications made by other clients reach it outside its replies. */
  protected readonly listening: ClientListening;
  /** What the database's session looks like to the clients sharing it. */
  protected readonly shared: SharedSession;
  /** The settings this client wants; the shared session is switched to them. */
  protected readonly settings: ClientSettings;
  /** DURABILITY=sync: replies held back until the archive stored the WAL they acknowledge. */
  protected readonly gate: ArchiveGate;

  constructor(protected readonly opts: SessionOptions) {
    this.shared = sharedSession(opts.database);
    this.listening = new ClientListening(
      this.shared.notifications,
      (m) => void opts.port.write(m),
      opts.processId,
    );
    this.names = new StatementNames(this.shared.nextClientId(), opts.maxPreparedStatements);
    this.settings = new ClientSettings(opts.settings);
    this.generation = opts.database.generation;
    this.statementsEpoch = this.shared.statementsEpoch;
    this.gate = new ArchiveGate(opts.port);
  }

  protected get database(): Database {
    return this.opts.database;
  }

  protected interruptRunning(reason: string): void {
    this.interrupting ??= reason;
    void this.stopRunning(reason).catch((err) => this.opts.logger.error({ err }, 'restart failed'));
  }

  /** Restarts the engine, unless the request may be committing and finishes in its grace. */
  private async stopRunning(reason: string): Promise<void> {
    if (this.request.holdUnlessCommitting()) {
      if (await this.request.endsWithin(COMMIT_GRACE_MS)) {
        // Its reply stands, as Postgres lets a commit finish: the interrupt is over.
        this.interrupting = undefined;
        return;
      }
      this.request.hold();
    }
    await this.database.interrupt(reason);
  }

  /** Puts the shared session into this client's state: settings and, if read-only, identity. */
  protected async switchTo(): Promise<void> {
    const shared = this.shared;
    if (shared.lastOwner === this.owner) return;
    const sql = this.settings.switchSql(shared);
    if (sql) {
      // The switch is one implicit transaction: when it fails, none of it took effect.
      let error = findError(await this.exec(query(sql)));
      if (error && shared.lastOwner !== undefined) {
        // Undoing the last client's settings may be what failed (a setting Postgres will not
        // RESET, one only its identity could set): start over from the session's baseline, so
        // that one client's settings can never keep the others out.
        await this.resetSettings();
        const again = this.settings.switchSql(shared);
        error = again ? findError(await this.exec(query(again))) : undefined;
      }
      if (error) throw error;
      this.settings.switched(shared);
    }
    shared.lastOwner = this.owner;
  }

  /**
   * Takes the shared session back to how it started (identity, RESET ALL, the database's
   * baseline) without DISCARD ALL: other clients' prepared statements live in the same session.
   */
  protected async resetSettings(): Promise<void> {
    // As the superuser (PGlite's session user; its setting reads as ''), whatever the database's
    // baseline identity: RESET ALL then covers every setting, and the baseline is applied again.
    const user = this.database.parameters.session_authorization || 'postgres';
    await this.exec(query(`RESET ROLE; SET SESSION AUTHORIZATION ${quoteIdent(user)}; RESET ALL`));
    const baseline = this.database.engine.baselineSql;
    if (baseline) await this.exec(query(baseline));
    this.shared.reset();
  }

  /**
   * Runs messages on the shared session. `stream`: the response goes to the client as it is
   * produced, and only its last part (with the final ReadyForQuery) is returned.
   */
  protected async exec(messages: Uint8Array, stream = false): Promise<Uint8Array> {
    const db = this.database;
    await db.ready();
    if (this.generation !== db.generation) await this.afterRestart();
    // The client's own statement_timeout applies to its statements (not to the gateway's own
    // switches and read-backs), within the server's STATEMENT_TIMEOUT.
    const server = this.opts.statementTimeoutMs;
    const own = stream ? this.settings.statementTimeoutMs() : undefined;
    const timeout = own !== undefined && (server <= 0 || own < server) ? Math.ceil(own) : server;
    // Node fires a longer timer at once (past 2^31-1 ms, ~24.8 days): that is no limit in practice.
    const timer =
      timeout > 0 && timeout <= MAX_TIMER_MS
        ? setTimeout(() => this.interruptRunning('canceling statement due to statement timeout'), timeout)
        : undefined;
    this.execInFlight = true;
    this.request.start(db.engine, this.status, messages);
    // DURABILITY=sync (or a copy just fetched, FSYNC=on, whose files are still being flushed):
    // from the first part that may acknowledge a commit whose WAL this unit wrote, its reply waits
    // in the gate, not here: the session is given back first (group commit).
    const engine = db.engine;
    const walBefore = db.commitBarrier ? engine.walWrites() : undefined;
    let held = false;
    // A batch that leaves its unit open: an error in it means the rest of the unit is skipped.
    const staysOpen = !this.batchEndsUnit;
    let failed = false;
    const holdIfCommitted = (part: Uint8Array, last: boolean) => {
      if (held || walBefore === undefined || engine.walWrites() === walBefore) return;
      if (!mayAcknowledgeCommit(part, last)) return;
      held = true;
      this.gate.hold();
    };
    let response: Uint8Array;
    try {
      response = await engine.exec(
        messages,
        stream
          ? (chunk) => {
              if (staysOpen && !failed) failed = hasError(chunk);
              holdIfCommitted(chunk, false);
              return this.write(chunk);
            }
          : undefined,
      );
      if (staysOpen && !failed) failed = hasError(response);
      holdIfCommitted(response, true);
    } catch (err) {
      if (err instanceof EngineBrokenError) {
        // Only this client hears of it; the others find a fresh session (as after a cancel).
        this.opts.logger.warn({ reason: err.message }, 'database engine broke; restarting it');
        // What came before the break may acknowledge a commit: it waits for the barrier too.
        if (stream && err.partial.length > 0) {
          holdIfCommitted(err.partial, false);
          this.write(err.partial);
        }
        this.interrupting = undefined;
        await db.interrupt(`engine broke: ${err.message}`);
        throw new Interrupted(ENGINE_BROKE, '58000');
      }
      if (!(err instanceof EngineKilledError)) throw err;
      await db.ready();
      throw new Interrupted(this.interrupting ?? 'terminating statement: the database was restarted');
    } finally {
      clearTimeout(timer);
      this.execInFlight = false;
      this.request.end();
      // Taken now, before another unit can write: it covers exactly the WAL written so far.
      if (held) this.gate.release(db.commitBarrier?.() ?? Promise.resolve());
    }
    const status = lastReadyStatus(response);
    if (status) {
      this.status = status;
      this.inUnit = false;
      this.unitFailed = false;
    } else {
      this.inUnit = true;
      this.unitFailed ||= failed;
    }
    return response;
  }

  /**
   * First use of the database after it restarted: a transaction this client had is gone, which
   * must not go unnoticed (57P02, as when a Postgres backend crashes); otherwise its prepared
   * statements are created again so it carries on unaware.
   */
  protected async afterRestart(): Promise<void> {
    const db = this.database;
    this.generation = db.generation;
    if (this.status !== 'I' && this.interrupting === undefined) throw errors.databaseRestarted();
    const parses = this.names.parseMessages();
    if (parses.length > 0) await db.engine.exec(Buffer.concat([...parses, closeStatements([])]));
  }

  /** Answers an interrupted statement like Postgres: 57014, and a failed transaction if one was open. */
  protected async answerInterrupted(reason: string, code: string): Promise<void> {
    const wasInTransaction = this.status !== 'I';
    this.interrupting = undefined;
    this.copy = undefined;
    this.inUnit = false;
    this.unitFailed = false;
    this.status = 'I';
    if (this.generation !== this.database.generation) await this.afterRestart();
    if (wasInTransaction) await this.exec(query('BEGIN; SELECT pg_catalog."statement interrupted"()'));
    const error = interrupted(code, reason);
    this.skipUntilSync = !this.batchEndsUnit;
    this.write(
      this.skipUntilSync
        ? errorResponse(error)
        : Buffer.concat([errorResponse(error), readyForQuery(this.status)]),
    );
    if (this.opts.poolMode === 'transaction' && this.status === 'I') this.database.hold.release(this.owner);
  }

  protected write(response: Uint8Array): Promise<void> | undefined {
    const named = restoreNames(response, this.names);
    return this.gate.write(this.listening.route(this.refusals.replace(named)));
  }

  /**
   * Writes a unit's response. After a statement that may have changed settings, they are read
   * back first, so ParameterStatus reaches the client before the ReadyForQuery, as Postgres does.
   * Inside a transaction the values are read again once it ends (a ROLLBACK may undo them).
   */
  protected async deliver(response: Uint8Array): Promise<void> {
    if (hasError(response) && this.lostStatement(response)) this.shared.statementsEpoch++;
    const ready = this.inUnit || this.copy || this.status === 'E' ? undefined : finalReady(response);
    if (!this.settings.due(this.status) || ready === undefined) {
      // A reset in a failed transaction is undone with it.
      if (this.status === 'E') this.settings.restoreSql(true);
      this.write(response);
      return;
    }
    this.write(response.subarray(0, ready));
    await this.restoreStartupSettings(hasError(response));
    await this.readBackSettings();
    this.write(response.subarray(ready));
  }

  /**
   * After RESET: settings the client connected with go back to those values, as in Postgres.
   * Inside a transaction a savepoint keeps a failing SET from aborting the client's transaction.
   */
  private async restoreStartupSettings(failed: boolean): Promise<void> {
    const sql = this.settings.restoreSql(failed);
    if (!sql) return;
    if (this.status === 'I') {
      await this.exec(query(sql));
      return;
    }
    const restored = await this.exec(
      query(`SAVEPOINT pglite_gateway_reset; ${sql}; RELEASE pglite_gateway_reset`),
    );
    if (hasError(restored)) {
      await this.exec(query('ROLLBACK TO SAVEPOINT pglite_gateway_reset; RELEASE pglite_gateway_reset'));
    }
  }

  /** Learns what SET/RESET did, remembers it as this client's, and reports changes to it. */
  protected async readBackSettings(): Promise<void> {
    const { names, sql } = this.settings.readBack(this.shared, this.status);
    const values = firstRow(await this.exec(query(sql)));
    if (!values) return;
    const reports = this.settings.apply(this.shared, names, values);
    if (reports.length > 0) this.gate.write(Buffer.concat(reports));
    // The statement check cannot see every way to set it (a parameter of set_config, a DO
    // block): an encoding PGlite cannot convert to is put back to UTF8 before anything else runs.
    const encoding = this.settings.value('client_encoding');
    if (encoding !== undefined && !isServableEncoding(encoding)) {
      await this.exec(query("SET client_encoding TO 'UTF8'"));
      throw errors.clientEncodingUnsupported(encoding);
    }
  }

  /**
   * Prepares again the client's statements that the session closed (cap) and that the batch about
   * to run uses. Parse + Flush keeps the client's unit open; if a Parse fails, the client gets
   * that error, and the session skips the client's messages up to its Sync, as if its own
   * message had failed.
   */
  protected async reprepare(): Promise<void> {
    const parses = this.names.takeReprepares();
    if (parses.length === 0) return;
    const response = await this.exec(Buffer.concat([...parses, flushMessage()]));
    if (!hasError(response)) return;
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
    // In a failed transaction nothing can be read: try again at the next unit.
    if (this.statementsEpoch === this.shared.statementsEpoch || this.status === 'E') return;
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

  /** Renames statements and guards what a Parse may run. */
  protected prepareExtended(message: Buffer): Buffer {
    if (message[0] === Frontend.Parse) {
      const nameEnd = message.indexOf(0, 5);
      const textEnd = message.indexOf(0, nameEnd + 1);
      const sql = message.toString('utf8', nameEnd + 1, textEnd);
      this.settings.noteStatement(mayChangeSettings(sql));
      this.settings.noteResets(resetSettings(sql));
      this.listening.note(sql);
      const verdict = judgeStatement(sql, this.database);
      const refusal =
        verdict.kind === 'copy-in'
          ? copyInExtended()
          : verdict.kind === 'refuse'
            ? verdict.error
            : forgetAll(sql)
              ? forgetAllExtended()
              : undefined;
      // Failing inside the engine keeps the transaction state the client sees and the real one equal.
      if (refusal) message = replaceParseText(message, nameEnd, this.refusals.sql(refusal));
      else this.noteMayDeallocate(sql);
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
}
