import { parameterStatus } from '../wire/protocol.js';
import { StartupResets } from './startup-resets.js';

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
  // A read-only database's baseline sets it: every client has it unless it changes it itself.
  'default_transaction_read_only',
] as const;

/**
 * Client encodings PGlite can serve: its build has no conversion functions (Postgres loads them
 * from shared libraries), so a conversion to LATIN1 or WIN1252 breaks the session instead of
 * converting. UTF8 (under any of its names) needs none; SQL_ASCII means none is done.
 */
export function isServableEncoding(value: string): boolean {
  // asyncpg sends 'utf-8' with its quotes.
  const name = value.toLowerCase().replace(/[-_\s'"]/g, '');
  return name === 'utf8' || name === 'unicode' || name === 'sqlascii' || name === 'default' || name === '';
}

const literal = (v: string) => `'${v.replace(/'/g, "''")}'`;
const ident = (v: string) => `"${v.replace(/"/g, '""')}"`;

/** One query returning the current value of each name, in order. */
export function readSettingsSql(names: readonly string[]): string {
  return `SELECT ${names.map(readOne).join(', ')}`;
}

/**
 * The session user is read as such: PGlite's session_authorization setting reads '' at start
 * and after RESET or DISCARD ALL, whoever the session user really is.
 */
const readOne = (name: string) =>
  name === 'session_authorization'
    ? 'session_user::text'
    : `pg_catalog.current_setting(${literal(name)}, true)`;

/**
 * Settings whose value is a list of names, each quoted as needed (Postgres' GUC_LIST_QUOTE):
 * `SET search_path TO 'a, b'` would make one schema named "a, b", so their values are given back
 * element by element. (Other list settings, such as DateStyle, split a single string themselves.)
 */
const QUOTED_LISTS = new Set([
  'search_path',
  'temp_tablespaces',
  'local_preload_libraries',
  'session_preload_libraries',
  'shared_preload_libraries',
]);

/** The elements of a list setting as current_setting() shows it: `a, "My ""x""", b`. */
export function listElements(value: string): string[] {
  const elements: string[] = [];
  let i = 0;
  while (i < value.length) {
    while (value[i] === ' ') i++;
    let element = '';
    if (value[i] === '"') {
      i++;
      while (i < value.length) {
        if (value[i] === '"' && value[i + 1] === '"') {
          element += '"';
          i += 2;
        } else if (value[i] === '"') {
          i++;
          break;
        } else element += value[i++];
      }
      while (i < value.length && value[i] !== ',') i++;
    } else {
      const end = value.indexOf(',', i);
      // Unquoted names are folded to lower case, as Postgres' own list parsing does.
      element = value
        .slice(i, end < 0 ? value.length : end)
        .trim()
        .replace(/[A-Z]/g, (c) => c.toLowerCase());
      i = end < 0 ? value.length : end;
    }
    elements.push(element);
    i++; // past the comma
  }
  return elements;
}

/** A value as SET takes it back: list settings element by element, others as one literal. */
function valueSql(name: string, value: string): string {
  if (value === '' || !QUOTED_LISTS.has(name.toLowerCase())) return literal(value);
  return listElements(value).map(literal).join(', ');
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
    else if (current.get(name) !== want) statements.push(`SET ${ident(name)} TO ${valueSql(name, want)}`);
  }
  return statements.length > 0 ? statements.join('; ') : undefined;
}

/**
 * Identity settings, read back after every settings change and switched first. A read-only
 * database's session authorization is fixed by its baseline (and refused to clients), so only
 * the role is tracked there.
 */
const IDENTITY_SETTINGS = ['session_authorization', 'role'] as const;
/** The value current_setting('role') shows when no role is set. */
const NO_ROLE = 'none';

/** The parts of a database the settings of its clients are tracked against. */
interface SharedSettings {
  settings: Map<string, string>;
  readonly defaults: ReadonlyMap<string, string>;
  readonly reported: ReadonlySet<string>;
  readonly readOnly?: boolean;
  /** The session authorization is fixed by a baseline (writer databases too): only the role is tracked. */
  readonly fixedIdentity?: boolean;
  /** Values of the reported parameters at start (session_authorization's default). */
  readonly parameters?: Readonly<Record<string, string>>;
}

const identityNames = (db: SharedSettings): string[] =>
  db.readOnly || db.fixedIdentity ? ['role'] : [...IDENTITY_SETTINGS];

/** The value an identity setting has when nobody changed it. */
/** PGlite's session runs as its bootstrap superuser, whose session_authorization reads as ''. */
const BOOTSTRAP_USER = 'postgres';

const identityDefault = (db: SharedSettings, name: string): string =>
  name === 'role' ? NO_ROLE : db.parameters?.[name] || BOOTSTRAP_USER;

/**
 * Back to the identity the session started with. PGlite's RESET SESSION AUTHORIZATION does not
 * go back to its superuser (the setting's boot value is empty), so it is set by name; setting
 * it is allowed whatever the current identity, as the authenticated user is a superuser.
 */
export function startingIdentitySql(db: SharedSettings): string {
  const names = identityNames(db);
  return names.includes('session_authorization')
    ? `RESET ROLE; SET SESSION AUTHORIZATION ${ident(identityDefault(db, 'session_authorization'))}`
    : 'RESET ROLE';
}

/**
 * SQL of one row: the current value of each name, then a JSON object of every other setting
 * changed in this session (SET), so that settings the gateway does not know by name (say
 * statement_timeout or work_mem) follow their client too instead of leaking to the next one.
 */
export function readBackSql(names: readonly string[]): string {
  const known = names.map((n) => literal(n.toLowerCase())).join(', ');
  const others = `(SELECT COALESCE(pg_catalog.json_object_agg(name, setting), '{}') FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT LIKE 'transaction\\_%' AND name <> 'seed' AND pg_catalog.lower(name) <> ALL (ARRAY[${known}]::text[]))`;
  return `${readSettingsSql(names)}, ${others}`;
}

/**
 * One client's settings: what it asked for, and whether a statement since the last read-back may
 * have changed them (inside a transaction they are read again when it ends: ROLLBACK undoes SET).
 */
export class ClientSettings {
  private readonly wanted: Map<string, string>;
  /** What the client connected with (startup packet, options -c): DISCARD ALL goes back to it. */
  private readonly initial: ReadonlyMap<string, string>;
  /** The values before a DISCARD ALL, so the read-back after it reports what it changed. */
  private beforeReset: ReadonlyMap<string, string> | undefined;
  private dirty: boolean;
  private recheck = false;
  private changed = false;
  /** The settings as last read back outside a transaction: what a rollback goes back to. */
  private outside: ReadonlyMap<string, string>;

  constructor(initial: Readonly<Record<string, string>>) {
    this.wanted = new Map(Object.entries(initial));
    this.initial = new Map(this.wanted);
    this.outside = this.initial;
    this.resets = new StartupResets(this.initial, (name, value) =>
      (IDENTITY_SETTINGS as readonly string[]).includes(name.toLowerCase())
        ? undefined
        : `SET ${ident(name)} TO ${valueSql(name, value)}`,
    );
    // A client that asked for nothing sees the database's defaults, which are known: no read-back
    // before its first answer (a one-shot HTTP query would otherwise pay a second round trip).
    this.dirty = this.wanted.size > 0;
  }

  /**
   * SQL that gives the shared session this client's settings, if any differ. A restricted identity
   * (SET ROLE, SET SESSION AUTHORIZATION) may not be allowed to set or reset the other settings
   * (superuser-only ones such as log_min_messages), so the session goes back to its starting
   * identity first, the other settings follow, and this client's identity comes last, in full:
   * SET SESSION AUTHORIZATION clears the role, so the role is always set after it.
   */
  switchSql(db: SharedSettings): string | undefined {
    const identity = identityNames(db);
    const identityOf = (m: ReadonlyMap<string, string>) =>
      identity.map((n) => [n, m.get(n) ?? identityDefault(db, n)] as const);
    const current = identityOf(db.settings);
    const wanted = identityOf(this.wanted);
    const atStart = current.every(([n, v]) => v === identityDefault(db, n));
    const identityDiffers = current.some(([, v], i) => v !== wanted[i]?.[1]);
    const pick = (m: ReadonlyMap<string, string>) => new Map([...m].filter(([k]) => !identity.includes(k)));
    const rest = switchSettingsSql(pick(db.settings), pick(this.wanted), db.defaults);
    const leave = !atStart && (identityDiffers || rest !== undefined);
    const statements: string[] = [];
    if (leave) statements.push(startingIdentitySql(db));
    if (rest) statements.push(rest);
    if (leave || identityDiffers)
      for (const [name, value] of wanted)
        if (value !== identityDefault(db, name)) statements.push(`SET ${ident(name)} TO ${literal(value)}`);
    return statements.length > 0 ? statements.join('; ') : undefined;
  }

  /**
   * The statement_timeout this client set (startup options, SET, SET LOCAL as last read back), in
   * ms; undefined when none or 0. PGlite has no timers of its own, so the pooler enforces it.
   */
  statementTimeoutMs(): number | undefined {
    const value = this.value('statement_timeout');
    const ms = value === undefined ? undefined : durationMs(value);
    return ms !== undefined && ms > 0 ? ms : undefined;
  }

  /** What the client has for a setting, its name matched case-insensitively as Postgres does. */
  value(name: string): string | undefined {
    const exact = this.wanted.get(name);
    if (exact !== undefined) return exact;
    for (const [k, v] of this.wanted) if (k.toLowerCase() === name) return v;
    return undefined;
  }

  /** Whether a statement of this client ever changed settings (its departure resets the session). */
  get everChanged(): boolean {
    return this.changed;
  }

  /** After switchSql ran: the session now has this client's settings (read back to normalise). */
  switched(db: SharedSettings): void {
    db.settings = new Map(db.defaults);
    for (const [k, v] of this.wanted) db.settings.set(k, v);
    this.dirty = true;
  }

  noteStatement(changes: boolean): void {
    if (!changes) return;
    this.dirty = true;
    this.changed = true;
  }

  /** RESETs of what the client connected with, to be set again (startup-resets.ts). */
  readonly resets: StartupResets;

  /** DISCARD ALL: back to what the client connected with. */
  reset(): void {
    this.beforeReset = new Map(this.wanted);
    this.wanted.clear();
    for (const [k, v] of this.initial) this.wanted.set(k, v);
    this.others.clear();
    this.dirty = true;
  }

  due(status: 'I' | 'T' | 'E'): boolean {
    return this.dirty || (this.recheck && status === 'I');
  }

  /** The names to read back and the query doing it. */
  readBack(db: SharedSettings, status: 'I' | 'T' | 'E'): { names: string[]; sql: string } {
    this.dirty = false;
    this.recheck = status !== 'I';
    const identity = identityNames(db);
    const names = [...new Set([...identity, ...db.defaults.keys(), ...this.wanted.keys()])].filter(
      (n) => identity.includes(n) || db.defaults.has(n) || !this.others.has(n),
    );
    return { names, sql: readBackSql(names) };
  }

  /** Records read-back values; returns ParameterStatus messages for reported values that changed. */
  apply(db: SharedSettings, names: string[], values: (string | null)[]): Buffer[] {
    const reports: Buffer[] = [];
    const identity = identityNames(db);
    const previous = this.beforeReset ?? this.wanted;
    this.beforeReset = undefined;
    names.forEach((name, i) => {
      let value = values[i];
      if (value === null || value === undefined) return;
      if (identity.includes(name)) {
        const unchanged = identityDefault(db, name);
        if (value === '') value = unchanged ?? value;
        const before = previous.get(name) ?? unchanged;
        if (value === unchanged) {
          this.wanted.delete(name);
          db.settings.delete(name);
        } else {
          this.wanted.set(name, value);
          db.settings.set(name, value);
        }
        if (before !== value && db.reported.has(name)) reports.push(parameterStatus(name, value));
        return;
      }
      const before = previous.get(name) ?? db.defaults.get(name);
      db.settings.set(name, value);
      if (value !== db.defaults.get(name) || this.wanted.has(name)) this.wanted.set(name, value);
      if (before !== value && db.reported.has(name)) reports.push(parameterStatus(name, value));
    });
    this.applyOthers(db, values[names.length]);
    if (!this.recheck) this.outside = new Map(this.wanted);
    return reports;
  }

  /**
   * The client's transaction is gone with a restarted engine: its settings are those it had
   * before the transaction (a ROLLBACK undoes SET and SET LOCAL), to be switched in again.
   */
  transactionLost(): void {
    this.wanted.clear();
    for (const [k, v] of this.outside) this.wanted.set(k, v);
    this.dirty = true;
  }

  /** Settings changed in the session that are not tracked by name: they follow this client. */
  private readonly others = new Set<string>();

  private applyOthers(db: SharedSettings, json: string | null | undefined): void {
    let changed: Record<string, unknown> = {};
    try {
      changed = json ? (JSON.parse(json) as Record<string, unknown>) : {};
    } catch {
      return;
    }
    for (const name of this.others) {
      if (name in changed) continue;
      this.others.delete(name);
      this.wanted.delete(name);
      db.settings.delete(name);
    }
    for (const [name, value] of Object.entries(changed)) {
      if (typeof value !== 'string') continue;
      this.others.add(name);
      this.wanted.set(name, value);
      db.settings.set(name, value);
    }
  }
}

const TIME_UNITS: Record<string, number> = {
  us: 0.001,
  ms: 1,
  s: 1000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** A Postgres time setting (`1000`, `1.5s`, `2min`; no unit means ms) in ms; undefined if unreadable. */
export function durationMs(value: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$/i.exec(value);
  if (!m) return undefined;
  return Number(m[1]) * (TIME_UNITS[(m[2] ?? 'ms').toLowerCase()] ?? 1);
}
