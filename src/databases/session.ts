import { errors, GatewayError, toClientError } from '../errors.js';
import {
  Backend,
  Frontend,
  query,
  readErrorFields,
  syncMessage,
  type TransactionStatus,
} from '../gateway/protocol.js';
import type { Logger } from '../log.js';
import { backendMessages, lastReadyStatus, splitCopyIn } from './backend-scan.js';
import type { Database } from './registry.js';
import { COPY_REFUSAL_SQL, judgeStatement } from './statement-guard.js';

/**
 * Relays one client's protocol messages to its database's single Postgres session. The client
 * holds the session (DatabaseHold) while it runs; in `session` pool mode it keeps it until it
 * disconnects. On disconnect the session is handed back clean: unit ended, transaction rolled
 * back, session state discarded.
 */

export interface ClientPort {
  write(data: Uint8Array): void;
  /** Sends a FATAL error (if given) and closes the client connection. */
  end(err?: GatewayError): void;
}

export interface SessionOptions {
  database: Database;
  poolMode: 'session';
  /** GUCs from the startup packet and `options -c`, applied to this client's session. */
  settings: Readonly<Record<string, string>>;
  port: ClientPort;
  logger: Logger;
  sessionId: string;
  /** Upper bound on COPY FROM STDIN data buffered for one statement. */
  maxCopyBytes: number;
}

interface CopyIn {
  query: Buffer;
  chunks: Buffer[];
  bytes: number;
}

/** SET statements applying every startup setting (not set_config: read-only sessions lack it). */
export function settingsQuery(settings: Readonly<Record<string, string>>): string | undefined {
  const entries = Object.entries(settings);
  if (entries.length === 0) return undefined;
  const ident = (v: string) => `"${v.replace(/"/g, '""')}"`;
  const literal = (v: string) => `'${v.replace(/'/g, "''")}'`;
  return entries.map(([k, v]) => `SET ${ident(k)} TO ${literal(v)}`).join('; ');
}

/** Startup packet keys that are protocol-level rather than GUCs. */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication']);

export function startupSettings(params: Record<string, string>, fromOptions: Record<string, string>) {
  const settings: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) if (!NOT_SETTINGS.has(k)) settings[k] = v;
  return { ...settings, ...fromOptions };
}

export class ClientSession {
  private readonly owner = Symbol('client');
  private readonly queue: Buffer[] = [];
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private status: TransactionStatus = 'I';
  /** Messages were sent since the last ReadyForQuery (an extended-protocol unit is open). */
  private inUnit = false;
  private copy: CopyIn | undefined;
  private prepared = false;
  private closed = false;
  /** Set by shutdown: end the client as soon as it is between transactions. */
  private onIdle: ((err: GatewayError) => void) | undefined;

  constructor(private readonly opts: SessionOptions) {}

  get queuedMessages(): number {
    return this.queue.length;
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
    this.queue.push(...messages);
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0 && !this.closed) this.push([]);
      else if (this.onIdle && this.idle) this.onIdle(errors.shuttingDown());
    });
  }

  private get database(): Database {
    return this.opts.database;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.closed) {
        await this.database.hold.acquire(this.owner, this.abort.signal);
        if (!this.prepared) await this.prepareSession();
        if (this.closed) return;
        await this.step();
      }
    } catch (err) {
      if (this.closed) return;
      this.opts.logger.warn({ err }, 'session failed');
      this.queue.length = 0;
      this.opts.port.end(toClientError(err, this.opts.sessionId));
    }
  }

  /** Applies this client's startup settings once it holds the session. */
  private async prepareSession(): Promise<void> {
    this.prepared = true;
    const sql = settingsQuery(this.opts.settings);
    if (!sql) return;
    const response = await this.exec(query(sql));
    const error = findError(response);
    if (error) throw error;
  }

  private async exec(messages: Uint8Array): Promise<Uint8Array> {
    const response = await this.database.engine.exec(messages);
    const status = lastReadyStatus(response);
    if (status) {
      this.status = status;
      this.inUnit = false;
    } else {
      this.inUnit = true;
    }
    return response;
  }

  private async step(): Promise<void> {
    if (this.copy) return this.stepCopy(this.copy);
    const batch: Buffer[] = [];
    while (this.queue.length > 0) {
      const message = this.queue.shift() as Buffer;
      const code = message[0];
      if (code === Frontend.Terminate) {
        // The connection's close handler runs close(); awaiting it here would wait on ourselves.
        this.queue.length = 0;
        this.opts.port.end();
        return;
      }
      // Outside COPY, Postgres ignores stray copy messages; PGlite must never see them.
      if (code === Frontend.CopyData || code === Frontend.CopyDone || code === Frontend.CopyFail) continue;
      if (code === Frontend.Query) {
        if (batch.length > 0) {
          this.queue.unshift(message);
          break;
        }
        return this.runQuery(message);
      }
      batch.push(code === Frontend.Parse ? guardParse(message, this.database) : message);
      if (code === Frontend.Sync) break;
    }
    if (batch.length === 0) return;
    this.opts.port.write(await this.exec(Buffer.concat(batch)));
  }

  private async runQuery(message: Buffer): Promise<void> {
    const sql = message.toString('utf8', 5, message.length - 1);
    const verdict = judgeStatement(sql, this.database);
    if (verdict.kind === 'refuse') {
      this.opts.port.write(await this.exec(query(verdict.sql)));
      return;
    }
    if (verdict.kind === 'copy-in') return this.beginCopy(message);
    this.opts.port.write(await this.exec(message));
  }

  /**
   * Learns the CopyInResponse without starting a COPY that has no data: the statement is run with
   * an immediate CopyFail (inside a savepoint when a transaction is open, so it stays intact).
   */
  private async beginCopy(message: Buffer): Promise<void> {
    const probe = Buffer.concat([message, copyFail('gateway probe')]);
    const inTransaction = this.status === 'T';
    if (inTransaction) await this.exec(query('SAVEPOINT pglite_gateway_copy'));
    const response = await this.exec(probe);
    if (inTransaction)
      await this.exec(query('ROLLBACK TO SAVEPOINT pglite_gateway_copy; RELEASE pglite_gateway_copy'));
    const { copyIn } = splitCopyIn(response);
    if (!copyIn) {
      this.opts.port.write(response);
      return;
    }
    this.copy = { query: message, chunks: [], bytes: 0 };
    this.inUnit = true;
    this.opts.port.write(copyIn);
  }

  private async stepCopy(copy: CopyIn): Promise<void> {
    while (this.queue.length > 0) {
      const message = this.queue.shift() as Buffer;
      switch (message[0]) {
        case Frontend.CopyData:
          copy.chunks.push(message);
          copy.bytes += message.length;
          if (copy.bytes > this.opts.maxCopyBytes) {
            return this.finishCopy(
              copy,
              copyFail(`COPY data exceeds the gateway limit of ${this.opts.maxCopyBytes} bytes`),
              false,
            );
          }
          break;
        case Frontend.CopyDone:
          return this.finishCopy(copy, message, true);
        case Frontend.CopyFail:
          return this.finishCopy(copy, message, false);
        case Frontend.Flush:
        case Frontend.Sync:
          break;
        default:
          this.queue.unshift(message);
          return this.finishCopy(copy, copyFail('unexpected message during COPY from stdin'), false);
      }
    }
  }

  private async finishCopy(copy: CopyIn, end: Buffer, withData: boolean): Promise<void> {
    this.copy = undefined;
    const parts = withData ? [copy.query, ...copy.chunks, end] : [copy.query, end];
    const response = await this.exec(Buffer.concat(parts));
    this.opts.port.write(splitCopyIn(response).rest);
  }

  /**
   * Ends the client: waits for its running step, then returns the Postgres session clean (unit
   * closed, transaction rolled back, session state discarded) and releases it.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.copy = undefined;
    this.abort.abort(errors.shuttingDown());
    await this.running?.catch(() => undefined);
    if (!this.database.hold.isHeldBy(this.owner)) return;
    try {
      if (this.inUnit) await this.exec(syncMessage());
      if (this.status !== 'I') await this.exec(query('ROLLBACK'));
      if (this.prepared) await this.exec(query('DISCARD ALL'));
      if (this.prepared && this.database.engine.baselineSql)
        await this.exec(query(this.database.engine.baselineSql));
    } catch (err) {
      this.opts.logger.error({ err }, 'could not reset the session after a client left');
    } finally {
      this.database.hold.release(this.owner);
    }
  }
}

function copyFail(reason: string): Buffer {
  const text = Buffer.from(`${reason}\0`);
  const out = Buffer.allocUnsafe(5 + text.length);
  out[0] = Frontend.CopyFail;
  out.writeUInt32BE(4 + text.length, 1);
  text.copy(out, 5);
  return out;
}

/**
 * A Parse whose statement may not run (COPY FROM STDIN, which the extended protocol cannot carry
 * to PGlite; identity changes in read-only databases) becomes one that fails inside Postgres.
 */
function guardParse(message: Buffer, opts: { readOnly: boolean }): Buffer {
  const nameEnd = message.indexOf(0, 5);
  const textEnd = message.indexOf(0, nameEnd + 1);
  if (nameEnd < 0 || textEnd < 0) return message;
  const verdict = judgeStatement(message.toString('utf8', nameEnd + 1, textEnd), opts);
  const replacement =
    verdict.kind === 'copy-in' ? COPY_REFUSAL_SQL : verdict.kind === 'refuse' ? verdict.sql : '';
  if (!replacement) return message;
  const body = Buffer.concat([
    message.subarray(5, nameEnd + 1),
    Buffer.from(`${replacement}\0`),
    Buffer.from([0, 0]), // no parameter types
  ]);
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = Frontend.Parse;
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/** The first ErrorResponse of a response, as a FATAL for the client (startup settings). */
function findError(response: Uint8Array): GatewayError | undefined {
  for (const m of backendMessages(response)) {
    if (m.code !== Backend.ErrorResponse) continue;
    const fields = readErrorFields(response.subarray(m.start, m.end));
    return new GatewayError(
      fields.get('C') ?? 'XX000',
      'FATAL',
      fields.get('M') ?? 'invalid startup setting',
      'startup_setting',
    );
  }
  return undefined;
}
