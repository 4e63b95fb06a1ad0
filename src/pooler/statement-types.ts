import { backendMessages } from '../wire/backend-scan.js';
import { Frontend, message } from '../wire/protocol.js';
import { readFields } from '../wire/sql-over-http.js';

/** A result column's type as RowDescription gives it: what a binary client decodes by. */
export interface ColumnType {
  oid: number;
  mod: number;
}

/**
 * The types a client learned when it described a prepared statement (Describe 'S'): its
 * parameters' (ParameterDescription) and its result's (RowDescription; none for NoData).
 * Postgres keeps both for the statement's life: when a table changes, a prepared statement keeps
 * its parameter types and fails (0A000) rather than return another row type. The gateway closes
 * statements behind the client's back (the cap, a restart) and prepares them again; without these
 * the new Parse would take the new types, and a binary client (asyncpg) would encode and decode
 * by the old ones: 2.5 stored as 4.6e18.
 */
export interface StatementTypes {
  params: number[];
  results: ColumnType[];
}

const PARAMETER_DESCRIPTION = 0x74; // 't'
const ROW_DESCRIPTION = 0x54; // 'T'
const NO_DATA = 0x6e; // 'n'
const READY_FOR_QUERY = 0x5a; // 'Z'

/** The column types of a RowDescription message (`start`: its type byte). */
export function rowTypes(response: Uint8Array, start: number): ColumnType[] {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  const end = start + 1 + buf.readUInt32BE(start + 1);
  return readFields(buf.subarray(start, end)).map((f) => ({ oid: f.dataTypeID, mod: f.dataTypeModifier }));
}

function parameterTypes(response: Uint8Array, start: number): number[] {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  const count = buf.readUInt16BE(start + 5);
  return Array.from({ length: count }, (_, k) => buf.readUInt32BE(start + 7 + 4 * k));
}

export const sameResults = (a: readonly ColumnType[], b: readonly ColumnType[]): boolean =>
  a.length === b.length && a.every((c, k) => c.oid === b[k]?.oid && c.mod === b[k]?.mod);

/**
 * Follows a client's unit: the Describe 'S' messages it sends (in order), then the response
 * parts, where each ParameterDescription and the RowDescription/NoData after it answer the next
 * of them. An error skips the rest of the unit: its ReadyForQuery drops what was not answered.
 */
export class DescribedStatements {
  private readonly pending: { name: string; definition: Buffer | undefined }[] = [];
  private params: number[] | undefined;

  /**
   * A Describe 'S' of the client's `name` ('' for the unnamed statement) is about to run, of the
   * statement defined as `definition` (a Close and Parse later in the unit may replace it).
   */
  describing(name: string, definition: Buffer | undefined): void {
    this.pending.push({ name, definition });
  }

  /** A response part on its way to the client; `learn` gets each named statement's types. */
  scan(
    response: Uint8Array,
    learn: (name: string, types: StatementTypes, definition: Buffer | undefined) => void,
  ): void {
    if (this.pending.length === 0) return;
    for (const m of backendMessages(response)) {
      if (m.code === PARAMETER_DESCRIPTION) {
        this.params = parameterTypes(response, m.start);
      } else if ((m.code === ROW_DESCRIPTION || m.code === NO_DATA) && this.params) {
        const described = this.pending.shift();
        const results = m.code === NO_DATA ? [] : rowTypes(response, m.start);
        if (described?.name) learn(described.name, { params: this.params, results }, described.definition);
        this.params = undefined;
      } else if (m.code === READY_FOR_QUERY) {
        this.pending.length = 0;
        this.params = undefined;
      }
      if (this.pending.length === 0) return;
    }
  }
}

/** Describe 'S' of a backend statement name. */
export const describeStatement = (backendName: string): Buffer =>
  message(Frontend.Describe, 'S', `${backendName}\0`);

/** Close 'S' of a backend statement name. */
export const closeStatement = (backendName: string): Buffer =>
  message(Frontend.Close, 'S', `${backendName}\0`);

/** A Parse that fails in the engine, leaving it to skip the rest of the unit up to its Sync. */
export const failingParse = (): Buffer =>
  message(
    Frontend.Parse,
    // Named: a Parse of the unnamed statement would drop the client's, even failing.
    'pglite_gateway_failed\0',
    'SELECT pg_catalog."statement result type changed"()\0',
    Buffer.from([0, 0]),
  );

/**
 * The re-prepared statements (`checks`: backend name and the result the client learned, in the
 * order their Describes were sent) whose RowDescription/NoData in `response` differ.
 */
export function changedResults(response: Uint8Array, checks: readonly [string, ColumnType[]][]): string[] {
  const changed: string[] = [];
  let k = 0;
  for (const m of backendMessages(response)) {
    if (m.code !== ROW_DESCRIPTION && m.code !== NO_DATA) continue;
    const check = checks[k++];
    if (!check) break;
    const now = m.code === NO_DATA ? [] : rowTypes(response, m.start);
    if (!sameResults(now, check[1])) changed.push(check[0]);
  }
  return changed;
}
