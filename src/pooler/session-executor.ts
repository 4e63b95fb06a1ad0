import type { Database } from '../databases/database.js';
import { EngineBrokenError, EngineKilledError } from '../engine/engine.js';
import { errors } from '../errors.js';
import { firstColumn, firstRow, hasError, lastReadyStatus } from '../wire/backend-scan.js';
import { errorResponse, query, readyForQuery, type TransactionStatus } from '../wire/protocol.js';
import { ArchiveGate, mayAcknowledgeCommit } from './archive-gate.js';
import { ClientListening } from './client-listening.js';
import type { CopyIn } from './copy-in.js';
import { Refusals } from './refusals.js';
import { COMMIT_GRACE_MS, RunningRequest } from './running-request.js';
import { ENGINE_BROKE, Interrupted, interrupted, quoteIdent } from './session-errors.js';
import { findError } from './session-messages.js';
import type { SessionOptions } from './session-options.js';
import { isServableEncoding, SHOW_SAVEPOINT, showSettingsSql } from './setting-values.js';
import { ClientSettings } from './settings.js';
import { type SharedSession, sharedSession } from './shared-session.js';
import { closeStatements, restoreNames } from './statement-renames.js';
import { DescribedStatements } from './statement-types.js';
import { StatementNames } from './statements.js';

/** The longest delay Node's timers keep (2^31-1 ms); a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The bottom of a client session: running its messages on the database's shared session,
 * switching that session to this client's settings, statement timeouts and interrupts (see
 * running-request.ts), recovering after the database restarted, and writing replies back (statement
 * names, refusals, notifications). SessionUnits (session-units.ts) shapes units and their replies
 * above it; ClientSession (session.ts) adds the queue and the turns.
 */
export abstract class SessionExecutor {
  protected readonly owner = Symbol('client');
  protected status: TransactionStatus = 'I';
  /** Messages were sent since the last ReadyForQuery (an extended-protocol unit is open). */
  protected inUnit = false;
  /** The open unit had an error: the engine skips to its Sync, and so does a Query (see step). */
  protected unitFailed = false;
  /** The last exec's reply had an error (looked for only while a RESET waits; see exec). */
  protected execFailed = false;
  protected copy: CopyIn | undefined;
  /** The database generation this client's statements and state belong to. */
  protected generation: number;
  /** The shared session's statementsEpoch when this client last checked its statements. */
  protected statementsEpoch: number;
  /** Why this client's running statement is being interrupted, when it is. */
  protected interrupting: string | undefined;
  /** The running exec is the client's own statement (see exec): a CancelRequest may stop it. */
  protected clientsInFlight = false;
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
  /** The client's Describe 'S' messages in flight, whose answers teach `names` their types. */
  protected readonly described = new DescribedStatements();
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
    const generation = this.database.generation;
    if (this.request.holdUnlessWriting()) {
      if (await this.request.endsWithin(COMMIT_GRACE_MS)) {
        // Its reply stands, as Postgres lets a commit finish: the interrupt is over, unless
        // another one stopped the engine meanwhile (its reason is the client's to hear).
        if (this.database.generation === generation) this.interrupting = undefined;
        return;
      }
      // Nothing awaited since the check: the same request is still running.
      this.request.hold();
    }
    await this.database.interrupt(reason);
  }

  /** Puts the shared session into this client's state: settings and, if read-only, identity. */
  protected async switchTo(): Promise<void> {
    // A restart first: catching up with it switches this client in already (afterRestart).
    const restarted = this.catchUp();
    if (restarted) await restarted;
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
   * produced, and only its last part (with the final ReadyForQuery) is returned. `clients`: they
   * are the client's own statements (streamed ones are), which a CancelRequest and the client's
   * statement_timeout may interrupt; the gateway's own switches and read-backs they may not (a
   * read-back runs after a unit's COMMIT, before its ReadyForQuery: the commit must stand).
   */
  protected async exec(
    messages: Uint8Array,
    stream = false,
    clients = stream,
    /** Sees every part of the answer, streamed or not (StatementNames.closesAnswered). */
    seen?: (part: Uint8Array) => void,
  ): Promise<Uint8Array> {
    const db = this.database;
    const restarted = this.catchUp();
    if (restarted) await restarted;
    // The client's own statement_timeout applies within the server's STATEMENT_TIMEOUT.
    const server = this.opts.statementTimeoutMs;
    const own = clients ? this.settings.statementTimeoutMs() : undefined;
    const timeout = own !== undefined && (server <= 0 || own < server) ? Math.ceil(own) : server;
    // Node fires a longer timer at once (past 2^31-1 ms, ~24.8 days): that is no limit in practice.
    const timer =
      timeout > 0 && timeout <= MAX_TIMER_MS
        ? setTimeout(() => this.interruptRunning('canceling statement due to statement timeout'), timeout)
        : undefined;
    this.clientsInFlight = clients;
    this.request.start(db.engine);
    // DURABILITY=sync (or a copy just fetched, FSYNC=on, whose files are still being flushed):
    // from the first part that may acknowledge a commit whose WAL this unit wrote, its reply waits
    // in the gate, not here: the session is given back first (group commit).
    const engine = db.engine;
    const walBefore = db.commitBarrier ? engine.walWrites() : undefined;
    let held = false;
    // Errors are looked for where they matter: in a batch that leaves its unit open (the rest of
    // the unit is skipped), and where a RESET waits to be followed up (it took no effect).
    const staysOpen = !this.batchEndsUnit;
    const watch = staysOpen || this.settings.resets.waiting;
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
              seen?.(chunk);
              if (watch && !failed) failed = hasError(chunk);
              holdIfCommitted(chunk, false);
              return this.write(chunk);
            }
          : undefined,
      );
      seen?.(response);
      if (watch && !failed) failed = hasError(response);
      this.execFailed = failed;
      holdIfCommitted(response, true);
    } catch (err) {
      if (err instanceof EngineBrokenError) {
        // Only this client hears of it; the others find a fresh session (as after a cancel).
        this.opts.logger.warn({ reason: err.message }, 'database engine broke; restarting it');
        // What came before the break may acknowledge a commit: it waits for the barrier too.
        if (stream && err.partial.length > 0) {
          seen?.(err.partial);
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
      this.clientsInFlight = false;
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
      this.unitFailed ||= staysOpen && failed;
    }
    return response;
  }

  /** Waits out a restart under way, and catches up with one that happened (afterRestart). */
  protected catchUp(): Promise<void> | undefined {
    // Nothing to wait for nearly always: no promise then, as this runs several times per unit.
    const db = this.database;
    if (!db.isRestarting && this.generation === db.generation) return undefined;
    return db.ready().then(() => (this.generation !== db.generation ? this.afterRestart() : undefined));
  }

  /**
   * First use of the database after it restarted: a transaction this client had is gone, which
   * must not go unnoticed (57P02, as when a Postgres backend crashes); otherwise its prepared
   * statements are created again so it carries on unaware. They are parsed under this client's
   * settings, as they first were: search_path decides which table a name means, and a statement
   * parsed under the database's default would write another table's types (2.5 into a bigint).
   */
  protected async afterRestart(): Promise<void> {
    const db = this.database;
    this.generation = db.generation;
    if (this.status !== 'I' && this.interrupting === undefined) throw errors.databaseRestarted();
    if (!db.hold.isHeldBy(this.owner)) {
      // Not this client's turn: its statements are prepared again at their next use, after
      // its settings were switched in.
      this.names.lostAll();
      return;
    }
    // Still holding the session (its own interrupted statement, session pool mode, or a turn
    // that is starting): the new session has nobody's settings, so this client's go in first.
    await this.switchTo();
    // Under the same backend names: a unit already renamed may be about to run.
    const parses = this.names.parseMessages();
    if (parses.length > 0) await db.engine.exec(Buffer.concat([...parses, closeStatements([])]));
  }

  /** Answers an interrupted statement like Postgres: 57014, and a failed transaction if one was open. */
  protected async answerInterrupted(reason: string, code: string): Promise<void> {
    const wasInTransaction = this.status !== 'I';
    if (wasInTransaction) this.settings.transactionLost();
    this.settings.resets.take(true); // a RESET in the interrupted statement is undone with it
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

  /**
   * After RESET: settings the client connected with go back to those values, as in Postgres.
   * Inside a transaction a savepoint keeps a failing SET from aborting the client's transaction;
   * there it returns what it ran (a transaction started over runs it again).
   */
  protected async restoreStartupSettings(failed: boolean): Promise<string | undefined> {
    const sql = this.settings.resets.take(failed, this.status !== 'I');
    if (!sql) return undefined;
    if (this.status === 'I') {
      await this.exec(query(sql));
      return undefined;
    }
    const inSavepoint = `SAVEPOINT pglite_gateway_reset; ${sql}; RELEASE pglite_gateway_reset`;
    const restored = await this.exec(query(inSavepoint));
    if (!hasError(restored)) return inSavepoint;
    await this.exec(query('ROLLBACK TO SAVEPOINT pglite_gateway_reset; RELEASE pglite_gateway_reset'));
    return undefined;
  }

  /** Learns what SET/RESET did, remembers it as this client's, and reports changes to it. */
  protected async readBackSettings(snapshotFree: boolean): Promise<void> {
    const { names, sql, untracked, shown } = this.settings.readBack(this.shared, this.status, snapshotFree);
    if (untracked && !this.shared.customNamesFull) {
      this.shared.customNamesFull = true;
      this.opts.logger.warn(
        { name: untracked },
        'a custom setting name is not tracked (over 200 names in this database, or over 256 characters): its value may reach other clients',
      );
    }
    const values = shown && (await this.showSettings(shown));
    let reports: Buffer[];
    if (shown && values) reports = this.settings.applyShown(this.shared, names, shown, values);
    else {
      const row = firstRow(await this.exec(query(sql)));
      if (!row) return;
      reports = this.settings.apply(this.shared, names, row);
    }
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
   * The values of `names` by SHOW, in a savepoint; undefined if a SHOW failed (a custom name no
   * longer defined after a restart, a name the lexer misread): the read-back then takes the
   * snapshot after all.
   */
  private async showSettings(names: readonly string[]): Promise<(string | null)[] | undefined> {
    const response = await this.exec(query(showSettingsSql(names)));
    if (hasError(response)) {
      await this.exec(query(`ROLLBACK TO SAVEPOINT ${SHOW_SAVEPOINT}; RELEASE ${SHOW_SAVEPOINT}`));
      return undefined;
    }
    const values = firstColumn(response);
    return values.length === names.length ? values : undefined;
  }

  /**
   * A leaving client whose database restarted since it last ran has nothing left in the new
   * session (no statements, no transaction, not its settings): nothing of it to re-create only to
   * close it. Its channels stay in the hub until it leaves, so UNLISTEN still runs.
   */
  protected async forgetIfRestarted(): Promise<void> {
    const db = this.database;
    await db.ready();
    if (db.generation === this.generation) return;
    this.generation = db.generation;
    this.names.forgetAll();
    this.status = 'I';
    this.inUnit = false;
  }

  protected async resetSession(): Promise<void> {
    await this.exec(query('DISCARD ALL'));
    const listen = this.shared.notifications.listenAllSql(); // DISCARD ALL ran UNLISTEN *
    if (listen) await this.exec(query(listen));
    const baseline = this.database.engine.baselineSql;
    if (baseline) await this.exec(query(baseline));
    this.shared.reset();
  }

  protected write(response: Uint8Array): Promise<void> | undefined {
    this.described.scan(response, (name, types, definition) => this.names.learn(name, types, definition));
    const named = restoreNames(response, this.names);
    return this.gate.write(this.listening.route(this.refusals.replace(named)));
  }
}
