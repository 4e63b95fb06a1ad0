import { Backend, parameterStatus } from '../gateway/protocol.js';
import { backendMessages } from './backend-scan.js';

/**
 * Session settings under multiplexing. Each client has the settings it asked for (startup
 * packet, options -c, later SET); the shared Postgres session is switched to them before the
 * client's unit runs, and read back after a unit that may have changed them.
 */

/** Settings reported to clients (ParameterStatus) that a client may change. */
export const TRACKED_SETTINGS = [
  'application_name',
  'client_encoding',
  'DateStyle',
  'IntervalStyle',
  'TimeZone',
  'standard_conforming_strings',
  'search_path',
] as const;

const literal = (v: string) => `'${v.replace(/'/g, "''")}'`;
const ident = (v: string) => `"${v.replace(/"/g, '""')}"`;

/** One query returning the current value of each name, in order. */
export function readSettingsSql(names: readonly string[]): string {
  return `SELECT ${names.map((n) => `pg_catalog.current_setting(${literal(n)}, true)`).join(', ')}`;
}

/** The values of the first DataRow of a response (null for SQL NULL). */
export function firstRow(response: Uint8Array): (string | null)[] | undefined {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  for (const m of backendMessages(response)) {
    if (m.code !== 0x44) continue; // 'D' DataRow
    const count = buf.readInt16BE(m.start + 5);
    const values: (string | null)[] = [];
    let i = m.start + 7;
    for (let c = 0; c < count; c++) {
      const len = buf.readInt32BE(i);
      i += 4;
      values.push(len < 0 ? null : buf.toString('utf8', i, i + len));
      if (len > 0) i += len;
    }
    return values;
  }
  return undefined;
}

/** Whether a response ends in an ErrorResponse before its ReadyForQuery. */
export function hasError(response: Uint8Array): boolean {
  for (const m of backendMessages(response)) if (m.code === Backend.ErrorResponse) return true;
  return false;
}

/**
 * SQL that moves the session from `current` to `wanted`: SET for differing values, RESET for
 * names someone set that this client has no value for. Undefined when nothing differs.
 */
export function switchSettingsSql(
  current: ReadonlyMap<string, string>,
  wanted: ReadonlyMap<string, string>,
  defaults: ReadonlyMap<string, string>,
): string | undefined {
  const statements: string[] = [];
  const names = new Set([...current.keys(), ...wanted.keys()]);
  for (const name of names) {
    const want = wanted.get(name) ?? defaults.get(name);
    if (want === undefined) statements.push(`RESET ${ident(name)}`);
    else if (current.get(name) !== want) statements.push(`SET ${ident(name)} TO ${literal(want)}`);
  }
  return statements.length > 0 ? statements.join('; ') : undefined;
}

/** The parts of a database the settings of its clients are tracked against. */
interface SharedSettings {
  settings: Map<string, string>;
  readonly defaults: ReadonlyMap<string, string>;
  readonly reported: ReadonlySet<string>;
}

/**
 * One client's settings: what it asked for, and whether a statement since the last read-back may
 * have changed them (inside a transaction they are read again when it ends: ROLLBACK undoes SET).
 */
export class ClientSettings {
  private readonly wanted: Map<string, string>;
  private dirty = true;
  private recheck = false;

  constructor(initial: Readonly<Record<string, string>>) {
    this.wanted = new Map(Object.entries(initial));
  }

  /** SQL that gives the shared session this client's settings, if any differ. */
  switchSql(db: SharedSettings): string | undefined {
    return switchSettingsSql(db.settings, this.wanted, db.defaults);
  }

  /** After switchSql ran: the session now has this client's settings (read back to normalise). */
  switched(db: SharedSettings): void {
    db.settings = new Map(db.defaults);
    for (const [k, v] of this.wanted) db.settings.set(k, v);
    this.dirty = true;
  }

  noteStatement(changes: boolean): void {
    if (changes) this.dirty = true;
  }

  /** DISCARD ALL: back to the defaults. */
  reset(): void {
    this.wanted.clear();
    this.dirty = true;
  }

  due(status: 'I' | 'T' | 'E'): boolean {
    return this.dirty || (this.recheck && status === 'I');
  }

  /** The names to read back and the query doing it. */
  readBack(db: SharedSettings, status: 'I' | 'T' | 'E'): { names: string[]; sql: string } {
    this.dirty = false;
    this.recheck = status !== 'I';
    const names = [...new Set([...db.defaults.keys(), ...this.wanted.keys()])];
    return { names, sql: readSettingsSql(names) };
  }

  /** Records read-back values; returns ParameterStatus messages for reported values that changed. */
  apply(db: SharedSettings, names: string[], values: (string | null)[]): Buffer[] {
    const reports: Buffer[] = [];
    names.forEach((name, i) => {
      const value = values[i];
      if (value === null || value === undefined) return;
      const before = this.wanted.get(name) ?? db.defaults.get(name);
      db.settings.set(name, value);
      if (value !== db.defaults.get(name) || this.wanted.has(name)) this.wanted.set(name, value);
      if (before !== value && db.reported.has(name)) reports.push(parameterStatus(name, value));
    });
    return reports;
  }
}
