/**
 * Pure codec for SQL over HTTP: the extended-protocol messages one HTTP query becomes (unnamed
 * statement, text parameters, text results), and the reading of the backend's reply into the
 * JSON shapes the Neon serverless driver expects. No I/O.
 */

import { Frontend, message, readErrorFields, syncMessage } from './protocol.js';

/** A field of a result, as node-postgres and the Neon driver describe it. */
export interface FieldJson {
  name: string;
  dataTypeID: number;
  tableID: number;
  columnID: number;
  dataTypeSize: number;
  dataTypeModifier: number;
  format: 'text';
}

/** One statement's result: rows are arrays of Postgres text values (or null), in field order. */
export interface QueryResult {
  command: string | null;
  rowCount: number | null;
  fields: FieldJson[];
  rows: (string | null)[][];
}

/** The JSON of a Postgres error: message plus every field the ErrorResponse carried. */
export type PgErrorJson = { message: string } & Partial<Record<(typeof ERROR_FIELDS)[number][1], string>>;

const ERROR_FIELDS = [
  ['S', 'severity'],
  ['C', 'code'],
  ['D', 'detail'],
  ['H', 'hint'],
  ['P', 'position'],
  ['p', 'internalPosition'],
  ['q', 'internalQuery'],
  ['W', 'where'],
  ['s', 'schema'],
  ['t', 'table'],
  ['c', 'column'],
  ['d', 'dataType'],
  ['n', 'constraint'],
  ['F', 'file'],
  ['L', 'line'],
  ['R', 'routine'],
] as const;

const Reply = {
  RowDescription: 0x54, // T
  DataRow: 0x44, // D
  CommandComplete: 0x43, // C
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  ReadyForQuery: 0x5a, // Z
} as const;

const cstring = (s: string) => `${s}\0`;

/**
 * Parse (unnamed) + Bind (text parameters, text results) + Describe portal + Execute, no Sync:
 * callers chain several and end with one Sync (`syncMessage()`). The SQL must not contain NUL.
 */
export function extendedQuery(sql: string, params: readonly (string | null)[] = []): Buffer[] {
  const parse = message(Frontend.Parse, cstring(''), cstring(sql), Buffer.from([0, 0]));
  const values: Buffer[] = [];
  for (const value of params) {
    if (value === null) {
      values.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      continue;
    }
    const bytes = Buffer.from(value, 'utf8');
    const length = Buffer.allocUnsafe(4);
    length.writeInt32BE(bytes.length, 0);
    values.push(length, bytes);
  }
  const count = Buffer.allocUnsafe(2);
  count.writeUInt16BE(params.length, 0);
  // No parameter format codes (all text), n values, no result format codes (all text). The
  // values are joined first: spreading 2 × 65,535 arguments into a call overflows the stack.
  const bind = message(
    Frontend.Bind,
    cstring(''),
    cstring(''),
    Buffer.from([0, 0]),
    count,
    Buffer.concat(values),
    Buffer.from([0, 0]),
  );
  const describe = message(Frontend.Describe, 'P', cstring(''));
  const execute = message(Frontend.Execute, cstring(''), Buffer.from([0, 0, 0, 0]));
  return [parse, bind, describe, execute];
}

/** The most parameters one Bind can carry (its count is an int16). */
export const MAX_PARAMS = 65535;

/**
 * The messages of one HTTP request: a single query, or a batch opened with `begin` (each its own
 * Execute), ending in one Sync. The batch's COMMIT is not among them: it runs as a unit of its own
 * once the reply proved whole (see settleUnit), so a batch whose answer is refused did nothing.
 */
export function requestMessages(
  queries: readonly { query: string; params: readonly (string | null)[] }[],
  begin?: string,
): Buffer[] {
  const out: Buffer[] = [];
  if (begin !== undefined) out.push(...extendedQuery(begin));
  for (const q of queries) out.push(...extendedQuery(q.query, q.params));
  out.push(syncMessage());
  return out;
}

/** `BEGIN` with the batch options the driver sends as headers. */
export function beginStatement(opts: {
  isolationLevel?: 'ReadUncommitted' | 'ReadCommitted' | 'RepeatableRead' | 'Serializable' | undefined;
  readOnly?: boolean | undefined;
  deferrable?: boolean | undefined;
}): string {
  const parts = ['BEGIN'];
  if (opts.isolationLevel) {
    const level = opts.isolationLevel.replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
    parts.push(`ISOLATION LEVEL ${level}`);
  }
  if (opts.readOnly !== undefined) parts.push(opts.readOnly ? 'READ ONLY' : 'READ WRITE');
  if (opts.deferrable !== undefined) parts.push(opts.deferrable ? 'DEFERRABLE' : 'NOT DEFERRABLE');
  return parts.join(' ');
}

/** `command` and `rowCount` of a CommandComplete tag, as node-postgres reads them. */
export function parseCommandTag(tag: string): { command: string | null; rowCount: number | null } {
  const match = /^([A-Za-z]+)(?: (\d+))?(?: (\d+))?/.exec(tag);
  if (!match) return { command: null, rowCount: null };
  const count = match[3] ?? match[2];
  return { command: match[1] as string, rowCount: count === undefined ? null : Number.parseInt(count, 10) };
}

export function errorJson(fields: Map<string, string>): PgErrorJson {
  const out: Record<string, string> = { message: fields.get('M') ?? 'unknown error' };
  for (const [key, name] of ERROR_FIELDS) {
    const value = fields.get(key);
    if (value !== undefined) out[name] = value;
  }
  return out as PgErrorJson;
}

/** A RowDescription message (from its type byte) as its fields; also the pooler's type check. */
export function readFields(msg: Buffer): FieldJson[] {
  const count = msg.readUInt16BE(5);
  const fields: FieldJson[] = [];
  let at = 7;
  for (let i = 0; i < count; i++) {
    const end = msg.indexOf(0, at);
    if (end < 0 || end + 19 > msg.length) throw new RangeError('malformed RowDescription');
    fields.push({
      name: msg.toString('utf8', at, end),
      tableID: msg.readUInt32BE(end + 1),
      columnID: msg.readInt16BE(end + 5),
      dataTypeID: msg.readUInt32BE(end + 7),
      dataTypeSize: msg.readInt16BE(end + 11),
      dataTypeModifier: msg.readInt32BE(end + 13),
      format: 'text',
    });
    at = end + 19;
  }
  return fields;
}

function readRow(msg: Buffer): (string | null)[] {
  const count = msg.readUInt16BE(5);
  const row: (string | null)[] = [];
  let at = 7;
  for (let i = 0; i < count; i++) {
    const length = msg.readInt32BE(at);
    at += 4;
    if (length < 0) {
      row.push(null);
      continue;
    }
    if (at + length > msg.length) throw new RangeError('malformed DataRow');
    row.push(msg.toString('utf8', at, at + length));
    at += length;
  }
  return row;
}

/** `{"command":…,"rowCount":…,"rowAsArray":…,"fields":[],"rows":[]}` and its comma, at most. */
const RESULT_JSON_BYTES = 100;

/** Bytes a string of UTF-8 `buf[start, end)` takes in JSON: quotes, and escapes as JSON.stringify writes them. */
function jsonStringBytes(buf: Uint8Array, start: number, end: number): number {
  let bytes = end - start + 2;
  for (let i = start; i < end; i++) {
    const b = buf[i] as number;
    if (b === 0x22 || b === 0x5c) bytes += 1;
    else if (b < 0x20) bytes += b === 0x08 || b === 0x09 || b === 0x0a || b === 0x0c || b === 0x0d ? 1 : 5;
  }
  return bytes;
}

/** Bytes of one DataRow's values in JSON (strings or null, comma-separated), keys not counted. */
function rowValueBytes(msg: Buffer): number {
  const count = msg.readUInt16BE(5);
  let bytes = 0;
  let at = 7;
  for (let i = 0; i < count && at + 4 <= msg.length; i++) {
    const length = msg.readInt32BE(at);
    at += 4;
    if (length < 0) {
      bytes += 5;
      continue;
    }
    bytes += jsonStringBytes(msg, at, Math.min(at + length, msg.length)) + 1;
    at += length;
  }
  return bytes;
}

/**
 * Reads a backend reply message by message: one result per Execute, the first error, and the
 * transaction status of the final ReadyForQuery. Counts the bytes the kept results will take as
 * JSON (resultJson: each field's description, each row's values with their escapes, and in
 * object mode each value's column name) so the caller can stop at its response limit
 * (`overflowed`, after which nothing more is kept). Row bytes alone would let a small request
 * (1,000 `SELECT *` of a wide empty table; a value of control characters, 6 bytes each in JSON)
 * build a response many times the limit.
 */
export class ReplyReader {
  readonly results: QueryResult[] = [];
  error: PgErrorJson | undefined;
  /** Set by ReadyForQuery: the unit is over. */
  status: 'I' | 'T' | 'E' | undefined;
  private current: QueryResult | undefined;
  private bytes = 0;
  /** JSON bytes every row of the current result adds besides its values: brackets, keys. */
  private rowOverhead = 2;
  overflowed = false;

  constructor(
    private readonly maxBytes: number,
    private readonly arrayMode = false,
  ) {}

  push(msg: Buffer): void {
    switch (msg[0]) {
      case Reply.RowDescription: {
        const result = this.open();
        // Past the limit nothing is kept, nor measured (the answer is 507 whatever follows).
        if (this.overflowed) return;
        const fields = readFields(msg);
        const names = fields.map((f) => Buffer.byteLength(JSON.stringify(f.name)));
        this.count(fields.reduce((sum, f) => sum + Buffer.byteLength(JSON.stringify(f)) + 1, 0));
        this.rowOverhead = 3 + (this.arrayMode ? 0 : names.reduce((sum, n) => sum + n + 1, 0));
        result.fields = fields;
        return;
      }
      case Reply.DataRow: {
        if (this.overflowed) return;
        this.count(rowValueBytes(msg) + this.rowOverhead);
        if (this.overflowed) return;
        this.open().rows.push(readRow(msg));
        return;
      }
      case Reply.CommandComplete: {
        const tag = msg.toString('utf8', 5, msg.indexOf(0, 5) < 0 ? msg.length : msg.indexOf(0, 5));
        Object.assign(this.open(), parseCommandTag(tag));
        this.current = undefined;
        return;
      }
      case Reply.EmptyQueryResponse:
        this.open();
        this.current = undefined;
        return;
      case Reply.ErrorResponse:
        this.error ??= errorJson(readErrorFields(msg));
        this.current = undefined;
        return;
      case Reply.ReadyForQuery:
        this.status = String.fromCharCode(msg[5] ?? 0x49) as 'I' | 'T' | 'E';
        return;
      default:
        // ParseComplete, BindComplete, NoData, notices, parameter status, notifications.
        return;
    }
  }

  private open(): QueryResult {
    if (!this.current) {
      this.current = { command: null, rowCount: null, fields: [], rows: [] };
      this.rowOverhead = 2;
      this.count(RESULT_JSON_BYTES);
      // Kept even past the limit: the caller answers 507 then, but needs the unit's shape.
      this.results.push(this.current);
    }
    return this.current;
  }

  private count(bytes: number): void {
    this.bytes += bytes;
    if (this.bytes > this.maxBytes) this.overflowed = true;
  }
}

/** The JSON body of one result, rows as arrays (array mode) or objects keyed by column name. */
export function resultJson(result: QueryResult, arrayMode: boolean): Record<string, unknown> {
  const rows = arrayMode
    ? result.rows
    : result.rows.map((row) => {
        const obj: Record<string, string | null> = Object.create(null);
        result.fields.forEach((f, i) => {
          obj[f.name] = row[i] ?? null;
        });
        return obj;
      });
  return {
    command: result.command,
    rowCount: result.rowCount,
    rowAsArray: arrayMode,
    fields: result.fields,
    rows,
  };
}
