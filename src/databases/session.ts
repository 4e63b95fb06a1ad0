import { errors, GatewayError, toClientError } from '../errors.js';
import {
  errorResponse,
  Frontend,
  flushMessage,
  query,
  readyForQuery,
  type TransactionStatus,
} from '../gateway/protocol.js';
import { lastReadyStatus, splitCopyIn } from './backend-scan.js';
import { CopyIn } from './copy-in.js';
import { EngineBrokenError, EngineKilledError } from './engine.js';
import { InputQueue } from './input-queue.js';
import { type Listener, listenChanges } from './notifications.js';
import { ClientSettings, firstRow, hasError } from './parameters.js';
import type { Database } from './registry.js';
import {
  commandComplete,
  finalReady,
  findError,
  firstErrorMessage,
  prepareOnlyUnitLength,
  replaceParseText,
  replaceRefusals,
  withReadyStatus,
} from './session-messages.js';
import type { SessionOptions } from './session-options.js';
import { judgeStatement, mayChangeSettings } from './statement-guard.js';
import { closeStatements, renameStatement, restoreNames, StatementNames } from './statements.js';

/**
 * Relays one client's protocol messages to its database's single Postgres session.
 *
 * transaction pool mode: the client holds the session (DatabaseHold) from the first message of a
 * unit (a Query, or extended messages up to Sync) until ReadyForQuery says idle; inside a
 * transaction it keeps it. Its prepared statements are renamed and its settings restored each
 * time it takes the session back. session pool mode: it keeps the session until it disconnects.
 * Either way, a departing client leaves the session clean.
 */

class Cancelled extends Error {}

/** The holder parked while we queued for a unit that could borrow: try borrowing instead. */
class Retry extends Error {}

/** This client's running statement was interrupted (cancel, statement timeout, broken engine). */
class Interrupted extends Error {
  constructor(
    message: string,
    readonly code = '57014',
  ) {
    super(message);
  }
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

const COPY_IN_EXTENDED = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'COPY FROM STDIN is supported only in a simple Query of its own',
    'copy_in_extended',
  );

const ENGINE_BROKE =
  'the database stopped answering this statement correctly and was restarted; committed data is kept';

export class ClientSession {
  private readonly owner = Symbol('client');
  private readonly queue = new InputQueue();
  private running: Promise<void> | undefined;
  private waiting: AbortController | undefined;
  private status: TransactionStatus = 'I';
  /** Messages were sent since the last ReadyForQuery (an extended-protocol unit is open). */
  private inUnit = false;
  private copy: CopyIn | undefined;
  private closed = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /** The database generation this client's statements and state belong to. */
  private generation: number;
  /** Why this client's running statement is being interrupted, when it is. */
  private interrupting: string | undefined;
  private execInFlight = false;
  /** The batch being executed ends a unit (Query or Sync), so an error answer ends with ReadyForQuery. */
  private batchEndsUnit = true;
  /** After an interrupted extended unit, the rest of it up to Sync is skipped, as Postgres does. */
  private skipUntilSync = false;
  private readonly names: StatementNames;
  /** Gateway errors to raise in place of the engine's errors for refusal markers. */
  private readonly refusals = new Map<string, GatewayError>();
  private refusalCount = 0;
  /** Receives notifications on the channels this client listens to, made by other clients. */
  private readonly listener: Listener = { notify: (message) => void this.opts.port.write(message) };
  /** An UNLISTEN ran: the session must listen again to the channels other clients want. */
  private relisten = false;
  /** The settings this client wants; the shared session is switched to them. */
  private readonly settings: ClientSettings;
  /** Set by shutdown: end the client as soon as it is between transactions. */
  private onIdle: ((err: GatewayError) => void) | undefined;

  constructor(private readonly opts: SessionOptions) {
    this.names = new StatementNames(opts.database.nextClientId(), opts.maxPreparedStatements);
    this.settings = new ClientSettings(opts.settings);
    this.generation = opts.database.generation;
  }

  get queuedBytes(): number {
    return this.queue.bytes;
  }

  private get database(): Database {
    return this.opts.database;
  }

  private get idle(): boolean {
    return this.running === undefined && this.status === 'I' && !this.inUnit && !this.copy;
  }

  /** Ends the client (via `end`) now if it is idle, otherwise once its transaction is over. */
  drainThen(end: (err: GatewayError) => void): void {
    this.onIdle = end;
    if (this.idle) end(errors.shuttingDown());
  }

  push(messages: Buffer[]): void {
    if (this.closed) return;
    clearTimeout(this.idleTimer);
    this.queue.push(messages);
    this.running ??= this.drain().then((awaitingInput) => {
      this.running = undefined;
      if (this.queue.length > 0 && !this.closed && !awaitingInput) this.push([]);
      else this.afterDrain();
    });
  }

  /**
   * CancelRequest: a client waiting for the database stops waiting; a running statement is
   * interrupted by restarting the database's engine (57014 either way).
   */
  cancel(): void {
    if (this.waiting) this.waiting.abort(new Cancelled());
    else if (this.execInFlight) this.interruptRunning('canceling statement due to user request');
  }

  private interruptRunning(reason: string): void {
    this.interrupting ??= reason;
    void this.database.interrupt(reason).catch((err) => this.opts.logger.error({ err }, 'restart failed'));
  }

  private afterDrain(): void {
    if (this.closed) return;
    this.opts.port.drained();
    if (this.onIdle && this.idle) this.onIdle(errors.shuttingDown());
    if (this.status !== 'I' && this.opts.idleInTransactionTimeoutMs > 0) {
      this.idleTimer = setTimeout(
        () => this.opts.port.end(errors.idleInTransactionTimeout()),
        this.opts.idleInTransactionTimeoutMs,
      );
      this.idleTimer.unref();
    }
  }

  /** Runs queued units; true when it stopped to wait for the rest of a unit from the client. */
  private async drain(): Promise<boolean> {
    try {
      while (this.queue.length > 0 && !this.closed) {
        if (this.database.hold.isHeldBy(this.owner)) {
          await this.database.hold.unpark(this.owner);
        } else {
          const borrowed = this.tryBorrow();
          if (borrowed === 'wait') return true;
          if (borrowed) {
            await borrowed;
            continue;
          }
          if (!(await this.take())) continue;
        }
        try {
          await this.step();
          await this.afterStep();
        } catch (err) {
          if (!(err instanceof Interrupted)) throw err;
          await this.answerInterrupted(err.message, err.code);
        }
      }
    } catch (err) {
      if (this.closed) return false;
      if (!(err instanceof GatewayError)) this.opts.logger.error({ err }, 'session failed');
      this.queue.clear();
      this.opts.port.end(toClientError(err, this.opts.sessionId));
    }
    return false;
  }

  /** Takes the shared session, waiting in FIFO order; false when a cancel ended the wait. */
  private async take(): Promise<boolean> {
    if (this.database.hold.isHeldBy(this.owner)) return true;
    const waiting = new AbortController();
    this.waiting = waiting;
    // A prepare-only unit that queued while the holder was busy may borrow once it parks.
    const unitLength = prepareOnlyUnitLength(this.queue.messages);
    const stopListening =
      typeof unitLength === 'number' && unitLength !== 0
        ? this.database.hold.onPark(() => waiting.abort(new Retry()))
        : undefined;
    try {
      await this.database.hold.acquire(this.owner, waiting.signal);
    } catch (err) {
      if (err instanceof Retry) return false;
      if (!(err instanceof Cancelled)) throw err;
      this.answerCancelled();
      return false;
    } finally {
      stopListening?.();
      this.waiting = undefined;
    }
    await this.switchTo();
    return true;
  }

  /**
   * Drivers prepare statements synchronously (pgbench -M prepared, PQprepare) and may block a
   * thread that also serves the client holding the session: waiting would deadlock. A unit that
   * only prepares (Parse/Describe/Close up to Sync) therefore runs while the holder is parked in
   * its transaction, inside a savepoint so an error cannot abort the holder's transaction.
   */
  private tryBorrow(): Promise<void> | 'wait' | undefined {
    if (this.opts.poolMode !== 'transaction' || this.status !== 'I' || this.inUnit) return undefined;
    const db = this.database;
    if (!db.hold.borrowable) return undefined;
    const length = prepareOnlyUnitLength(this.queue.messages);
    // The unit's first messages may arrive before its Sync: wait for the rest rather than queue.
    if (length === 'incomplete') return 'wait';
    if (!length) return undefined;
    if (this.settings.switchSql(db)) return undefined;
    return db.hold.borrow(async () => {
      const unit = this.queue.take(length);
      const batch = Buffer.concat(unit.map((m) => this.prepareExtended(m)));
      await db.engine.exec(query('SAVEPOINT pglite_gateway_borrow'));
      const parses = this.names.takeReprepares();
      const prepared =
        parses.length > 0 ? await db.engine.exec(Buffer.concat([...parses, flushMessage()])) : undefined;
      const response = await db.engine.exec(batch);
      const failed = hasError(response) || (prepared !== undefined && hasError(prepared));
      const undo = failed ? 'ROLLBACK TO SAVEPOINT pglite_gateway_borrow; ' : '';
      await db.engine.exec(query(`${undo}RELEASE pglite_gateway_borrow`));
      this.write(withReadyStatus(response, this.status));
    });
  }

  /** A cancelled wait fails the client's next unit with 57014, as a cancelled query would. */
  private answerCancelled(): void {
    let message = this.queue.shift();
    while (message && message[0] !== Frontend.Sync && message[0] !== Frontend.Query)
      message = this.queue.shift();
    const error = new GatewayError('57014', 'ERROR', 'canceling statement due to user request', 'cancelled');
    this.opts.port.write(Buffer.concat([errorResponse(error), readyForQuery(this.status)]));
  }

  /** Puts the shared session into this client's state: settings and, if read-only, identity. */
  private async switchTo(): Promise<void> {
    const db = this.database;
    if (db.lastOwner === this.owner) return;
    db.lastOwner = this.owner;
    const sql = this.settings.switchSql(db);
    if (!sql) return;
    const error = findError(await this.exec(query(sql)));
    if (error) throw error;
    this.settings.switched(db);
  }

  /**
   * Runs messages on the shared session. `stream`: the response goes to the client as it is
   * produced, and only its last part (with the final ReadyForQuery) is returned.
   */
  private async exec(messages: Uint8Array, stream = false): Promise<Uint8Array> {
    const db = this.database;
    await db.ready();
    if (this.generation !== db.generation) await this.afterRestart();
    const timeout = this.opts.statementTimeoutMs;
    const timer =
      timeout > 0
        ? setTimeout(() => this.interruptRunning('canceling statement due to statement timeout'), timeout)
        : undefined;
    this.execInFlight = true;
    let response: Uint8Array;
    try {
      response = await db.engine.exec(messages, stream ? (chunk) => this.write(chunk) : undefined);
    } catch (err) {
      if (err instanceof EngineBrokenError) {
        // Only this client hears of it; the others find a fresh session (as after a cancel).
        this.opts.logger.warn({ reason: err.message }, 'database engine broke; restarting it');
        if (stream && err.partial.length > 0) this.write(err.partial);
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
    }
    const status = lastReadyStatus(response);
    if (status) {
      this.status = status;
      this.inUnit = false;
    } else {
      this.inUnit = true;
    }
    return response;
  }

  /**
   * First use of the database after it restarted: a transaction this client had is gone, which
   * must not go unnoticed (57P02, as when a Postgres backend crashes); otherwise its prepared
   * statements are created again so it carries on unaware.
   */
  private async afterRestart(): Promise<void> {
    const db = this.database;
    this.generation = db.generation;
    if (this.status !== 'I' && this.interrupting === undefined) throw errors.databaseRestarted();
    const parses = this.names.parseMessages();
    if (parses.length > 0) await db.engine.exec(Buffer.concat([...parses, closeStatements([])]));
  }

  /** Answers an interrupted statement like Postgres: 57014, and a failed transaction if one was open. */
  private async answerInterrupted(reason: string, code: string): Promise<void> {
    const wasInTransaction = this.status !== 'I';
    this.interrupting = undefined;
    this.copy = undefined;
    this.inUnit = false;
    this.status = 'I';
    if (this.generation !== this.database.generation) await this.afterRestart();
    if (wasInTransaction) await this.exec(query('BEGIN; SELECT pg_catalog."statement interrupted"()'));
    const error = new GatewayError(code, 'ERROR', reason, code === '57014' ? 'interrupted' : 'engine_broken');
    this.skipUntilSync = !this.batchEndsUnit;
    this.write(
      this.skipUntilSync
        ? errorResponse(error)
        : Buffer.concat([errorResponse(error), readyForQuery(this.status)]),
    );
    if (this.opts.poolMode === 'transaction' && this.status === 'I') this.database.hold.release(this.owner);
  }

  private write(response: Uint8Array): Promise<void> | undefined {
    let out = restoreNames(response, this.names);
    if (this.refusals.size > 0) out = replaceRefusals(out, this.refusals);
    const hub = this.database.notifications;
    if (hub.active) out = hub.route(out, this.listener);
    return this.opts.port.write(out);
  }

  /** Tracks this client's LISTEN/UNLISTEN statements (before they run). */
  private noteListen(sql: string): void {
    for (const change of listenChanges(sql)) {
      if (change.kind === 'listen') this.database.notifications.listen(this.listener, change.channel);
      else {
        this.database.notifications.unlisten(this.listener, change.channel);
        this.relisten = true;
      }
    }
  }

  private async afterStep(): Promise<void> {
    if (this.closed || this.inUnit || this.copy) return;
    this.refusals.clear(); // markers of statements skipped after an earlier error
    if (this.relisten) {
      this.relisten = false;
      const listen = this.database.notifications.listenAllSql();
      if (listen) await this.exec(query(listen));
    }
    if (this.status === 'T' && this.opts.poolMode === 'transaction' && this.queue.length === 0) {
      this.database.hold.park(this.owner);
    }
    if (this.status !== 'I') return;
    const evicted = this.names.takeEvicted();
    if (evicted.length > 0) await this.exec(closeStatements(evicted));
    if (this.opts.poolMode === 'transaction') this.database.hold.release(this.owner);
  }

  /**
   * Writes a unit's response. After a statement that may have changed settings, they are read
   * back first, so ParameterStatus reaches the client before the ReadyForQuery, as Postgres does.
   * Inside a transaction the values are read again once it ends (a ROLLBACK may undo them).
   */
  private async deliver(response: Uint8Array): Promise<void> {
    const ready = this.inUnit || this.copy || this.status === 'E' ? undefined : finalReady(response);
    if (!this.settings.due(this.status) || ready === undefined) {
      this.write(response);
      return;
    }
    this.write(response.subarray(0, ready));
    await this.readBackSettings();
    this.write(response.subarray(ready));
  }

  /** Learns what SET/RESET did, remembers it as this client's, and reports changes to it. */
  private async readBackSettings(): Promise<void> {
    const { names, sql } = this.settings.readBack(this.database, this.status);
    const values = firstRow(await this.exec(query(sql)));
    if (!values) return;
    const reports = this.settings.apply(this.database, names, values);
    if (reports.length > 0) this.opts.port.write(Buffer.concat(reports));
  }

  private async step(): Promise<void> {
    if (this.copy) return this.stepCopy(this.copy);
    if (this.skipUntilSync) return this.skipToSync();
    const batch: Buffer[] = [];
    let message = this.queue.shift();
    while (message) {
      const code = message[0];
      if (code === Frontend.Terminate) {
        // The connection's close handler runs close(); awaiting it here would wait on ourselves.
        this.queue.clear();
        this.opts.port.end();
        return;
      }
      // Outside COPY, Postgres ignores stray copy messages; PGlite must never see them.
      if (code === Frontend.CopyData || code === Frontend.CopyDone || code === Frontend.CopyFail) {
        message = this.queue.shift();
        continue;
      }
      if (code === Frontend.Query) {
        if (batch.length === 0) return this.runQuery(message);
        this.queue.putBack(message);
        break;
      }
      batch.push(this.prepareExtended(message));
      if (code === Frontend.Sync) break;
      message = this.queue.shift();
    }
    if (batch.length === 0) return;
    this.batchEndsUnit = batch[batch.length - 1]?.[0] === Frontend.Sync;
    await this.reprepare();
    await this.deliver(await this.exec(Buffer.concat(batch), true));
    this.batchEndsUnit = true;
  }

  /**
   * Prepares again the client's statements that the session closed (cap) and that the batch about
   * to run uses. Parse + Flush keeps the client's unit open; if a Parse fails, the client gets
   * that error, and the session skips the client's messages up to its Sync, as if its own
   * message had failed.
   */
  private async reprepare(): Promise<void> {
    const parses = this.names.takeReprepares();
    if (parses.length === 0) return;
    const response = await this.exec(Buffer.concat([...parses, flushMessage()]));
    if (!hasError(response)) return;
    const error = firstErrorMessage(response);
    if (error) this.write(error);
  }

  private skipToSync(): void {
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      if (message[0] !== Frontend.Sync) continue;
      this.skipUntilSync = false;
      this.write(readyForQuery(this.status));
      return;
    }
  }

  /** Renames statements and guards what a Parse may run. */
  private prepareExtended(message: Buffer): Buffer {
    if (message[0] === Frontend.Parse) {
      const nameEnd = message.indexOf(0, 5);
      const textEnd = message.indexOf(0, nameEnd + 1);
      const sql = message.toString('utf8', nameEnd + 1, textEnd);
      this.settings.noteStatement(mayChangeSettings(sql));
      this.noteListen(sql);
      const verdict = judgeStatement(sql, this.database);
      const refusal =
        verdict.kind === 'copy-in'
          ? COPY_IN_EXTENDED()
          : verdict.kind === 'refuse'
            ? verdict.error
            : undefined;
      // Failing inside the engine keeps the transaction state the client sees and the real one equal.
      if (refusal) message = replaceParseText(message, nameEnd, this.refusalSql(refusal));
    }
    return renameStatement(message, this.names);
  }

  private async runQuery(message: Buffer): Promise<void> {
    const sql = message.toString('utf8', 5, message.length - 1);
    this.settings.noteStatement(mayChangeSettings(sql));
    this.noteListen(sql);
    const verdict = judgeStatement(sql, this.database);
    if (verdict.kind === 'refuse') return this.raise(verdict.error);
    if (verdict.kind === 'copy-in') return this.beginCopy(message);
    if (/^\s*(discard|deallocate\s+(prepare\s+)?)all\s*;?\s*$/i.test(sql) && this.status === 'I') {
      return this.forgetStatements(message);
    }
    await this.deliver(await this.exec(message, true));
  }

  /**
   * Answers a simple Query with a gateway error as Postgres would answer its own: outside a
   * transaction directly; inside one the engine runs a statement that fails, so the transaction
   * is aborted there too, and its error is replaced by ours on the way out (replaceRefusals).
   */
  private async raise(error: GatewayError): Promise<void> {
    if (this.status === 'I') {
      this.write(Buffer.concat([errorResponse(error), readyForQuery('I')]));
      return;
    }
    await this.deliver(await this.exec(query(this.refusalSql(error))));
  }

  /** SQL that fails in the engine with an error `write` replaces by `error`. */
  private refusalSql(error: GatewayError): string {
    const marker = `pglite_gateway_refusal_${++this.refusalCount}`;
    this.refusals.set(marker, error);
    return `SELECT pg_catalog.${marker}()`;
  }

  /** DISCARD ALL / DEALLOCATE ALL would drop every client's statements: drop only ours. */
  private async forgetStatements(message: Buffer): Promise<void> {
    const names = this.names.backendNames();
    this.names.forgetAll();
    if (names.length > 0) await this.exec(closeStatements(names));
    const isDiscard = /discard/i.test(message.toString('utf8', 5));
    if (isDiscard) {
      this.settings.reset();
      const unheard = this.database.notifications.unlisten(this.listener, '*');
      if (unheard.length > 0)
        await this.exec(query(unheard.map((ch) => `UNLISTEN ${quoteIdent(ch)}`).join('; ')));
    }
    const tag = isDiscard ? 'DISCARD ALL' : 'DEALLOCATE ALL';
    await this.deliver(Buffer.concat([commandComplete(tag), readyForQuery(this.status)]));
  }

  /**
   * Learns the CopyInResponse without starting a COPY that has no data (which kills PGlite): the
   * statement runs with an immediate CopyFail, inside a savepoint when a transaction is open.
   */
  private async beginCopy(message: Buffer): Promise<void> {
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

  private async stepCopy(copy: CopyIn): Promise<void> {
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      const outcome = copy.accept(message);
      if (outcome === 'more') continue;
      if (outcome.unconsumed) {
        this.queue.putBack(message);
      }
      this.copy = undefined;
      const response = await this.exec(outcome.messages);
      await this.deliver(splitCopyIn(response).rest);
      return;
    }
  }

  /**
   * Ends the client: waits for its running step, then returns the Postgres session clean (unit
   * closed, transaction rolled back, statements closed, session state discarded) and releases it.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.queue.clear();
    this.copy = undefined;
    this.waiting?.abort(errors.shuttingDown());
    await this.running?.catch(() => undefined);
    const hold = this.database.hold;
    const owned = this.names.backendNames();
    const dirty = this.opts.poolMode === 'transaction' && this.settings.everChanged;
    const unheard = this.database.notifications.unlisten(this.listener, '*');
    if (!hold.isHeldBy(this.owner) && owned.length === 0 && !dirty && unheard.length === 0) return;
    try {
      await hold.acquire(this.owner);
      if (this.inUnit) await this.exec(closeStatements([]));
      if (this.status !== 'I') await this.exec(query('ROLLBACK'));
      if (this.opts.poolMode === 'session') await this.resetSession();
      else {
        if (owned.length > 0) await this.exec(closeStatements(owned));
        if (dirty && this.database.lastOwner === this.owner) await this.resetSettings();
        if (unheard.length > 0)
          await this.exec(query(unheard.map((ch) => `UNLISTEN ${quoteIdent(ch)}`).join('; ')));
      }
    } catch (err) {
      this.opts.logger.error({ err }, 'could not reset the session after a client left');
    } finally {
      hold.release(this.owner);
    }
  }

  /**
   * Transaction mode: a departing client that changed settings (SET ROLE, statement_timeout…)
   * leaves the shared session as it found it, without DISCARD ALL (other clients' prepared
   * statements live in the same session).
   */
  private async resetSettings(): Promise<void> {
    await this.exec(query('RESET ROLE; RESET SESSION AUTHORIZATION; RESET ALL'));
    const baseline = this.database.engine.baselineSql;
    if (baseline) await this.exec(query(baseline));
    this.database.settings = new Map(this.database.defaults);
    this.database.lastOwner = undefined;
  }

  private async resetSession(): Promise<void> {
    await this.exec(query('DISCARD ALL'));
    const listen = this.database.notifications.listenAllSql(); // DISCARD ALL ran UNLISTEN *
    if (listen) await this.exec(query(listen));
    const baseline = this.database.engine.baselineSql;
    if (baseline) await this.exec(query(baseline));
    this.database.settings = new Map(this.database.defaults);
    this.database.lastOwner = undefined;
  }
}
