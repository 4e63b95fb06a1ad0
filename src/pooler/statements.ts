import { backendMessages } from '../wire/backend-scan.js';
import { Backend, Frontend, message as tagged } from '../wire/protocol.js';
import type { ColumnType, StatementTypes } from './statement-types.js';
import { uninterruptibleQuery } from './uninterruptible.js';

/**
 * Named prepared statements of one client, renamed so clients sharing one Postgres session can
 * all prepare "P_0". Backend names are short (`_g<client>_<n>`) so Postgres' 63-byte name limit
 * never makes two of them collide.
 *
 * Two sets, as PgBouncer (1.21+) keeps them: every statement the client defined (its Parse,
 * bounded by MAX_CLIENT_STATEMENTS and MAX_CLIENT_STATEMENT_BYTES), and those that exist in the
 * Postgres session now (at most `cap`, least recently used closed beyond it). A statement the
 * client still has but the session no longer does is prepared again before its next use.
 */
export class StatementNames {
  /** Server-resident statements, least recently used first. */
  private readonly toBackend = new Map<string, string>();
  private readonly toClient = new Map<string, string>();
  private readonly evicted: string[] = [];
  /** Every statement the client defined: the Parse body after its name, least recently used first. */
  private readonly definitions = new Map<string, Buffer>();
  private definitionBytes = 0;
  /** Statements that are a lone ROLLBACK or ABORT (uninterruptible.ts), by client name. */
  private readonly rollbacks = new Set<string>();
  /** Types the client learned by describing its statements (statement-types.ts). */
  private readonly types = new Map<string, StatementTypes>();
  /** Parse messages to send before the messages being renamed now. */
  private readonly reprepares: Buffer[] = [];
  /** Re-prepared statements whose result must be what the client learned (backend name → types). */
  private readonly resultChecks = new Map<string, ColumnType[]>();
  private sequence = 0;
  private readonly prefix: string;
  private readonly missing: string;

  constructor(
    clientId: number,
    private readonly cap: number,
    private readonly maxDefinitions = MAX_CLIENT_STATEMENTS,
    private readonly maxDefinitionBytes = MAX_CLIENT_STATEMENT_BYTES,
  ) {
    this.prefix = `_g${clientId}_`;
    this.missing = `${this.prefix}missing`;
  }

  /** Statements that exist in the Postgres session. */
  get size(): number {
    return this.toBackend.size;
  }

  /** Statements the client has defined (some may have to be prepared again). */
  get defined(): number {
    return this.definitions.size;
  }

  /** Whether the client has a statement of this name (in the session now, or to prepare again). */
  has(name: string): boolean {
    return this.toBackend.has(name) || this.definitions.has(name);
  }

  /** Backend names of every statement this client has (for closing them on disconnect). */
  backendNames(): string[] {
    return [...this.toBackend.values(), ...this.takeEvicted()];
  }

  /** Statements pushed out by the cap, to be closed at the next unit boundary. */
  takeEvicted(): string[] {
    return this.evicted.splice(0);
  }

  /**
   * Parse messages that must reach the session before the messages renamed since the last call,
   * and the result types those statements must still have (backend name, types; see reprepare).
   * A borrowed prepare-only unit skips the check: it re-prepares only to Describe the statement,
   * and that Describe tells the client the types it then has.
   */
  takeReprepares(): { parses: Buffer[]; checks: [string, ColumnType[]][] } {
    const checks = [...this.resultChecks];
    this.resultChecks.clear();
    return { parses: this.reprepares.splice(0), checks };
  }

  /** Whether one of this client's statements, by its backend name, is a lone ROLLBACK or ABORT. */
  isLoneRollback(backendName: string): boolean {
    const name = this.toClient.get(backendName);
    return name !== undefined && this.rollbacks.has(name);
  }

  /** The definition (Parse body) the client's statement `name` has now: types learned belong to it. */
  definition(name: string): Buffer | undefined {
    return this.definitions.get(name);
  }

  /** The client described its statement `name` as `definition`: a re-preparation keeps these types. */
  learn(name: string, types: StatementTypes, definition: Buffer | undefined): void {
    if (definition !== undefined && this.definitions.get(name) === definition) this.types.set(name, types);
  }

  /**
   * A statement the session does not have after all (its re-preparation failed or was skipped,
   * or did not keep its result type): prepared again at its next use, and failing as Postgres
   * fails there, every time until it works.
   */
  notInSession(backendName: string): void {
    const name = this.toClient.get(backendName);
    if (name !== undefined) this.drop(name, false);
  }

  /** Whether renaming this Bind or Describe would prepare one of the client's statements again. */
  needsReprepare(message: Buffer): boolean {
    // Nearly always every statement the client defined is in the session: nothing to decode.
    if (this.toBackend.size >= this.definitions.size) return false;
    let start: number;
    if (message[0] === Frontend.Bind) start = message.indexOf(0, 5) + 1;
    else if (message[0] === Frontend.Describe && message[5] === 0x53) start = 6;
    else return false;
    const name = cstring(message, start).value;
    return name !== '' && !this.toBackend.has(name) && this.definitions.has(name);
  }

  forgetAll(): void {
    this.toBackend.clear();
    this.toClient.clear();
    this.types.clear();
    this.rollbacks.clear();
    this.definitions.clear();
    this.definitionBytes = 0;
    this.reprepares.length = 0;
  }

  /** Whether a backend statement name is one of this client's (`_g<client>_<n>`). */
  owns(backendName: string): boolean {
    return backendName.startsWith(this.prefix) && backendName !== this.missing;
  }

  /** The LIKE pattern of this client's backend names. */
  get likePattern(): string {
    return `${this.prefix.replaceAll('_', '\\_')}%`;
  }

  /**
   * The session lost some statements behind the gateway's back (a DEALLOCATE in a function or
   * DO block): those not in `existing` are prepared again on their next use.
   */
  keepOnly(existing: ReadonlySet<string>): void {
    for (const [name, backend] of [...this.toBackend]) if (!existing.has(backend)) this.drop(name, false);
  }

  /** The session lost every statement (the engine restarted): they are prepared again on use. */
  lostAll(): void {
    this.toBackend.clear();
    this.toClient.clear();
    this.evicted.length = 0;
  }

  /** A name being defined by Parse (`rest`: the message after the name): allocates a backend name. */
  define(name: string, rest: Buffer = EMPTY_PARSE): string {
    if (name === '') return '';
    // Closed earlier in the unit and defined again: the new statement stays, under the same name.
    for (const [i, closed] of this.closing.entries()) if (closed === name) this.closing[i] = '';
    this.remember(name, rest);
    // An existing name keeps its backend name, so Postgres reports the duplicate as it should.
    const existing = this.touch(name);
    if (existing) return existing;
    return this.allocate(name);
  }

  /** A name being used (Bind, Describe): unknown names map to a name that does not exist. */
  use(name: string): string {
    if (name === '') return '';
    const backend = this.touch(name);
    if (backend) return backend;
    const rest = this.definitions.get(name);
    if (rest) {
      // Still the client's, but closed in the session: prepare it again first, with the types
      // the client knows it by.
      this.touchDefinition(name, rest);
      const fresh = this.allocate(name);
      this.reprepares.push(tagged(PARSE, `${fresh}\0`, this.pinned(name, rest)));
      const results = this.types.get(name)?.results;
      if (results) this.resultChecks.set(fresh, results);
      return fresh;
    }
    this.toClient.set(this.missing, name);
    return this.missing;
  }

  /**
   * A Close of statement `name` ('' for the unnamed statement or a portal) being renamed: it
   * takes effect once the engine answers it (closesAnswered), as an error earlier in its unit
   * skips it. Then the name is forgotten whether or not it existed (Postgres agrees).
   */
  close(name: string): string {
    this.closing.push(name);
    if (name === '') return '';
    return this.toBackend.get(name) ?? this.missing;
  }

  /** A statement closed now: the gateway runs its Close itself (DEALLOCATE name). */
  closeNow(name: string): string {
    const backend = this.toBackend.get(name) ?? this.missing;
    this.forget(name);
    this.drop(name, false);
    return backend;
  }

  /** Close messages renamed and not yet answered, in order: the client's name, or ''. */
  private readonly closing: string[] = [];

  /**
   * A part of the engine's answer to the messages renamed so far: each CloseComplete answers the
   * next pending Close, which takes effect; an error skipped the rest of the unit, those too.
   */
  closesAnswered(part: Uint8Array): void {
    if (this.closing.length === 0) return;
    for (const m of backendMessages(part)) {
      if (m.code === Backend.ErrorResponse) {
        this.closing.length = 0;
        return;
      }
      if (m.code !== Backend.CloseComplete) continue;
      const name = this.closing.shift();
      if (name) {
        this.forget(name);
        this.drop(name, false);
      }
      if (this.closing.length === 0) return;
    }
  }

  /** Closes the engine never answered (its unit was interrupted, or skipped) did not run. */
  closesUnanswered(): void {
    this.closing.length = 0;
  }

  /** Replaces backend names in a text (error messages) by the client's own names. */
  restore(text: string): string {
    if (!text.includes(this.prefix)) return text;
    return text.replace(new RegExp(`${this.prefix}(?:\\d+|missing)`, 'g'), (m) => this.toClient.get(m) ?? m);
  }

  /** Parse messages that re-create every statement now in the session (after a restart). */
  parseMessages(): Buffer[] {
    const out: Buffer[] = [];
    for (const [name, backend] of this.toBackend) {
      const rest = this.definitions.get(name);
      if (rest) out.push(tagged(PARSE, `${backend}\0`, this.pinned(name, rest)));
    }
    return out;
  }

  private allocate(name: string): string {
    const backend = `${this.prefix}${this.sequence++}`;
    this.toBackend.set(name, backend);
    this.toClient.set(backend, name);
    if (this.toBackend.size > this.cap) {
      const [oldest] = this.toBackend.keys();
      if (oldest !== undefined) this.drop(oldest, true);
    }
    return backend;
  }

  private remember(name: string, rest: Buffer): void {
    this.forget(name);
    this.definitions.set(name, rest);
    if (uninterruptibleQuery(rest.toString('utf8', 0, rest.indexOf(0)), false)) this.rollbacks.add(name);
    this.definitionBytes += rest.length;
    // Bounded memory: past the bounds the least recently used definitions are forgotten for good.
    while (this.definitions.size > this.maxDefinitions || this.definitionBytes > this.maxDefinitionBytes) {
      const [oldest] = this.definitions.keys();
      if (oldest === undefined || oldest === name) break;
      this.forget(oldest);
    }
  }

  /** The Parse body `rest` with every parameter type given: those the client learned. */
  private pinned(name: string, rest: Buffer): Buffer {
    const params = this.types.get(name)?.params;
    const textEnd = rest.indexOf(0);
    if (!params || textEnd < 0 || textEnd + 3 > rest.length) return rest;
    const declared = rest.readUInt16BE(textEnd + 1);
    if (params.length < declared) return rest;
    const types = Buffer.alloc(2 + 4 * params.length);
    types.writeUInt16BE(params.length, 0);
    for (const [k, oid] of params.entries()) types.writeUInt32BE(oid, 2 + 4 * k);
    return Buffer.concat([rest.subarray(0, textEnd + 1), types]);
  }

  /** A definition used again: the most recently used, its learned types kept. */
  private touchDefinition(name: string, rest: Buffer): void {
    const types = this.types.get(name);
    this.remember(name, rest);
    if (types && this.definitions.has(name)) this.types.set(name, types);
  }

  private forget(name: string): void {
    const rest = this.definitions.get(name);
    if (rest === undefined) return;
    this.types.delete(name);
    this.rollbacks.delete(name);
    this.definitions.delete(name);
    this.definitionBytes -= rest.length;
  }

  private touch(name: string): string | undefined {
    const backend = this.toBackend.get(name);
    if (backend === undefined) return undefined;
    // Map order is insertion order: re-inserting makes it the most recently used.
    this.toBackend.delete(name);
    this.toBackend.set(name, backend);
    const rest = this.definitions.get(name);
    if (rest) {
      this.definitions.delete(name);
      this.definitions.set(name, rest);
    }
    return backend;
  }

  private drop(name: string, evict: boolean): void {
    const backend = this.toBackend.get(name);
    if (backend === undefined) return;
    this.toBackend.delete(name);
    this.toClient.delete(backend);
    if (evict) this.evicted.push(backend);
  }
}

/** The statement name a Parse message defines. */
export const parseName = (parse: Buffer): string => parse.toString('utf8', 5, parse.indexOf(0, 5));

/** Statements a client may have defined, and their total size, before the oldest are forgotten. */
const MAX_CLIENT_STATEMENTS = 10_000;
const MAX_CLIENT_STATEMENT_BYTES = 16 * 1024 * 1024;
const PARSE = 0x50;
/** An empty query with no parameter types: the Parse body of a statement defined without one. */
const EMPTY_PARSE = Buffer.from([0, 0, 0]);

export const cstring = (buf: Buffer, start: number): { value: string; end: number } => {
  const end = buf.indexOf(0, start);
  if (end < 0) throw new RangeError('unterminated string in message');
  return { value: buf.toString('utf8', start, end), end };
};
