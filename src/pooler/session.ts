import { EngineKilledError } from '../engine/engine.js';
import { errors, GatewayError, toClientError } from '../errors.js';
import { errorResponse, Frontend, query, readyForQuery } from '../wire/protocol.js';
import { runBorrowed } from './borrow.js';
import type { CopyIn } from './copy-in.js';
import { InputQueue } from './input-queue.js';
import { Cancelled, cancelledWait, Interrupted, Retry, unexpectedDuringCopy } from './session-errors.js';
import { MAX_TIMER_MS } from './session-executor.js';
import { abandonUnit, deallocateUnit, prepareOnlyUnitLength, withReadyStatus } from './session-messages.js';
import { SessionUnits } from './session-units.js';
import { closeStatements } from './statement-renames.js';
import { addBatch, emptyUnit, uninterruptibleUnit, unitTexts } from './uninterruptible.js';

/**
 * Relays one client's protocol messages to its database's single Postgres session.
 *
 * transaction pool mode: the client holds the session (DatabaseHold) from the first message of a
 * unit (a Query, or extended messages up to Sync) until ReadyForQuery says idle; inside a
 * transaction it keeps it. Its prepared statements are renamed and its settings restored each
 * time it takes the session back. session pool mode: it keeps the session until it disconnects.
 * Either way, a departing client leaves the session clean.
 */
/** Held by nobody: `hold.isHeldBy(NOBODY)` tells a free session (the holder is undefined then). */
const NOBODY = undefined as unknown as symbol;

export class ClientSession extends SessionUnits {
  private readonly queue = new InputQueue();
  private running: Promise<void> | undefined;
  private waiting: AbortController | undefined;
  private closed = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Set by shutdown: end the client as soon as it is between transactions. */
  private onIdle: ((err: GatewayError) => void) | undefined;

  get queuedBytes(): number {
    return this.queue.bytes;
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
    else if (this.clientsInFlight) this.interruptRunning('canceling statement due to user request');
    else if (this.copy) {
      // COPY FROM STDIN still collecting its data: nothing runs yet, so the COPY is failed now
      // (57014, nothing of it written), and the data still coming is dropped, as Postgres does.
      this.copy.cancelled = true;
      this.push([]);
    }
  }

  private afterDrain(): void {
    if (this.closed) return;
    this.opts.port.drained();
    if (this.onIdle && this.idle) this.onIdle(errors.shuttingDown());
    // A client holding the session between messages blocks every other client of the database:
    // inside a transaction, and also in the middle of an extended-protocol unit (no Sync yet) or
    // of a COPY FROM STDIN whose data stopped coming.
    const unfinished = this.inUnit || this.copy !== undefined;
    const idleMs = this.opts.idleInTransactionTimeoutMs;
    // Node fires a timer past 2^31-1 ms (~24.8 days) at once: that long means no limit.
    if ((this.status !== 'I' || unfinished) && idleMs > 0 && idleMs <= MAX_TIMER_MS) {
      this.idleTimer = setTimeout(
        () =>
          this.opts.port.end(
            this.status === 'I' ? errors.idleInUnitTimeout() : errors.idleInTransactionTimeout(),
          ),
        idleMs,
      );
      this.idleTimer.unref();
    }
  }

  /** Runs queued units; true when it stopped to wait for the rest of a unit from the client. */
  private async drain(): Promise<boolean> {
    try {
      while ((this.queue.length > 0 || this.copy?.cancelled) && !this.closed) {
        if (this.skipUntilSync && !this.database.hold.isHeldBy(this.owner)) {
          // Discarding the rest of a failed unit needs no session.
          this.skipToSync();
          continue;
        }
        // A DEALLOCATE unit is answered whole (step): wait for its Sync before anything runs.
        if (
          !this.inUnit &&
          this.status !== 'E' &&
          deallocateUnit(this.queue.messages, this.names) === 'incomplete'
        )
          return true;
        let spoiled = false;
        if (this.database.hold.isHeldBy(this.owner)) {
          spoiled = await this.database.hold.unpark(this.owner);
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
          const started = performance.now();
          // A borrowed prepare took this client's snapshot: its transaction starts over.
          if (spoiled && (await this.fresh.startOver((sql) => this.exec(query(sql)))))
            this.opts.logger.warn('a transaction started over after a borrowed prepare failed');
          // A unit that arrives in parts (TCP, Flush) is one unit to FreshTransaction.
          if (!this.inUnit && !this.copy) this.fresh.unitStarts(this.status);
          await this.step();
          await this.afterStep();
          if (!this.inUnit && !this.copy)
            this.shared.activity.unitDone(performance.now() - started, this.status === 'I');
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
    const hold = this.database.hold;
    if (hold.isHeldBy(this.owner)) return true;
    // A free session is granted at once: no wait to cancel, and an AbortController costs
    // microseconds on every unit of the one-client path.
    const free = hold.queued === 0 && hold.isHeldBy(NOBODY);
    const waiting = free ? undefined : new AbortController();
    this.waiting = waiting;
    // A prepare-only unit that queued while the holder was busy may borrow once it parks.
    const unitLength = waiting ? prepareOnlyUnitLength(this.queue.messages) : 0;
    const stopListening =
      typeof unitLength === 'number' && unitLength !== 0
        ? hold.onPark(() => waiting?.abort(new Retry()))
        : undefined;
    const started = performance.now();
    try {
      await hold.acquire(this.owner, waiting?.signal);
      this.shared.activity.waited(performance.now() - started);
    } catch (err) {
      if (err instanceof Retry) return false;
      if (!(err instanceof Cancelled)) throw err;
      this.answerCancelled();
      return false;
    } finally {
      stopListening?.();
      this.waiting = undefined;
    }
    try {
      await this.switchTo();
    } catch (err) {
      // The engine broke or restarted under the switch (another client's doing): the session is
      // fresh now, so switch again; a second failure is this client's to hear about.
      if (!(err instanceof Interrupted)) throw err;
      this.interrupting = undefined;
      await this.switchTo();
    }
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
    if (this.settings.switchSql(this.shared)) return undefined;
    return db.hold.borrow(async () => {
      const unit = this.queue.take(length);
      this.names.closesUnanswered();
      const batch = Buffer.concat(unit.map((m) => this.prepareExtended(m)));
      this.noteParsedResets([]); // it only prepares
      const { parses } = this.names.takeReprepares();
      const { response, reprepared } = await runBorrowed(db.engine, batch, parses);
      // A statement it needed could not be prepared again: the unit was skipped; the client
      // hears why, and the statement is tried again at its next use.
      if (reprepared) this.repreparationFailed(parses, reprepared);
      this.names.closesAnswered(response);
      this.write(withReadyStatus(response, this.status));
    });
  }

  /** A cancelled wait fails the client's next unit with 57014, as a cancelled query would. */
  private answerCancelled(): void {
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      if (message[0] !== Frontend.Sync && message[0] !== Frontend.Query) continue;
      this.opts.port.write(Buffer.concat([errorResponse(cancelledWait()), readyForQuery(this.status)]));
      return;
    }
    // The unit's Sync has not arrived: the one ReadyForQuery answers it when it does, and what
    // comes before it is skipped, as after any error in an extended unit.
    this.skipUntilSync = true;
    this.opts.port.write(errorResponse(cancelledWait()));
  }

  private async afterStep(): Promise<void> {
    if (this.closed || this.inUnit || this.copy) return;
    this.refusals.clear(); // markers of statements skipped after an earlier error
    const relisten = this.listening.takeRelistenSql();
    if (relisten) await this.exec(query(relisten));
    if (this.status === 'T' && this.opts.poolMode === 'transaction' && this.queue.length === 0) {
      this.database.hold.park(this.owner, this.fresh.fresh);
    }
    if (this.status !== 'I') return;
    const evicted = this.names.takeEvicted();
    if (evicted.length > 0) await this.exec(closeStatements(evicted));
    if (this.opts.poolMode === 'transaction') this.database.hold.release(this.owner);
  }

  /** What the extended unit under way runs (see uninterruptible.ts). */
  private unitSoFar = emptyUnit();

  private async step(): Promise<void> {
    if (this.copy) return this.stepCopy(this.copy);
    if (this.skipUntilSync) return this.skipToSync();
    // Before the unit's Parse messages take new names: re-creating this client's statements after
    // a restart must not create one the unit is about to Parse (42P05).
    const restarted = this.catchUp();
    if (restarted) await restarted;
    await this.checkStatements();
    // DEALLOCATE ALL or of a name through the extended protocol (psycopg): done for this client
    // alone, as the simple query is. In a failed transaction it goes on to the engine, which
    // refuses it (25P02).
    const deallocate =
      this.inUnit || this.status === 'E' ? undefined : deallocateUnit(this.queue.messages, this.names);
    if (typeof deallocate === 'object') {
      this.queue.take(deallocate.length);
      if (deallocate.name !== undefined) return this.deallocate(deallocate.name, deallocate.replies);
      return this.forgetStatements(false, deallocate.replies);
    }
    this.names.closesUnanswered();
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
      if (code === Frontend.Query || code === Frontend.FunctionCall) {
        if (batch.length > 0) {
          this.queue.putBack(message);
          break;
        }
        // After an error in a unit not yet synced, Postgres drops every message up to the Sync.
        if (this.inUnit && this.unitFailed) {
          message = this.queue.shift();
          continue;
        }
        // A Query inside an extended unit without its Sync: end that unit first (PGlite
        // mishandles a Query there; Postgres would have run it inside the unit's transaction).
        if (this.inUnit && (await this.endUnitBeforeQuery())) return;
        if (code === Frontend.FunctionCall) return this.runFunctionCall(message);
        return this.runQuery(message);
      }
      // A statement to prepare again begins a batch: what comes before it runs first, so that a
      // failing re-preparation fails at its use, as in Postgres, not before the whole unit.
      if (batch.length > 0 && this.names.needsReprepare(message)) {
        this.queue.putBack(message);
        break;
      }
      batch.push(this.prepareExtended(message));
      if (code === Frontend.Sync) break;
      message = this.queue.shift();
    }
    if (batch.length === 0) return;
    this.batchEndsUnit = batch[batch.length - 1]?.[0] === Frontend.Sync;
    this.noteParsedResets(batch);
    // Its parts may arrive apart (TCP): what it runs is counted over the whole unit (read before
    // a re-prepare, which leaves the unit open).
    if (!this.inUnit) this.unitSoFar = emptyUnit();
    addBatch(this.unitSoFar, batch, (name) => this.names.isLoneRollback(name));
    const timed = !uninterruptibleUnit(this.unitSoFar, this.status === 'E');
    await this.reprepare();
    const response = await this.exec(Buffer.concat(batch), true, timed, (part) =>
      this.names.closesAnswered(part),
    );
    // Only a whole unit that may leave the transaction fresh has its texts read.
    const watch = this.batchEndsUnit && this.status === 'T' && this.fresh.watching;
    const texts = watch ? unitTexts(this.unitSoFar) : undefined;
    await this.deliver(response, texts);
    if (texts) this.fresh.ran(texts.runs, this.status, texts.parsed);
    this.batchEndsUnit = true;
  }

  private skipToSync(): void {
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      if (message[0] !== Frontend.Sync) continue;
      this.skipUntilSync = false;
      this.write(readyForQuery(this.status));
      return;
    }
  }

  private async stepCopy(copy: CopyIn): Promise<void> {
    if (copy.cancelled) return this.runCopy(copy.abort(this.refusals.marker(cancelledWait())));
    for (let message = this.queue.shift(); message; message = this.queue.shift()) {
      let outcome = copy.accept(message);
      if (outcome === 'more') continue;
      if ('unexpected' in outcome) {
        // As Postgres: 08P01 and the message is dropped; a Terminate still ends the client.
        if (outcome.unexpected === Frontend.Terminate) this.queue.putBack(message);
        const type = outcome.unexpected.toString(16).toUpperCase().padStart(2, '0');
        const error = unexpectedDuringCopy(type);
        outcome = copy.abort(this.refusals.marker(error));
      }
      return this.runCopy(outcome);
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
    await this.forgetIfRestarted();
    const owned = this.names.backendNames();
    const dirty = this.opts.poolMode === 'transaction' && this.settings.everChanged;
    const unlisten = this.listening.leaveSql();
    if (!hold.isHeldBy(this.owner) && owned.length === 0 && !dirty && !unlisten) return;
    try {
      await hold.acquire(this.owner);
      if (this.inUnit) await this.exec(abandonUnit());
      if (this.status !== 'I') await this.exec(query('ROLLBACK'));
      if (this.opts.poolMode === 'session') await this.resetSession();
      else {
        if (owned.length > 0) await this.exec(closeStatements(owned));
        if (dirty && this.shared.lastOwner === this.owner) await this.resetSettings();
        if (unlisten) await this.exec(query(unlisten));
      }
    } catch (err) {
      // An engine that broke, restarted or closed meanwhile left no session to reset.
      if (err instanceof Interrupted || err instanceof EngineKilledError)
        this.opts.logger.info({ reason: err.message }, 'session restarted or closed while a client left');
      else this.opts.logger.error({ err }, 'could not reset the session after a client left');
    } finally {
      hold.release(this.owner);
    }
  }
}
