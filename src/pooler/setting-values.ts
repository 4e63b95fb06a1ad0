/**
 * Setting values as the pooler reads and writes them: which client encodings PGlite can serve,
 * how list settings are quoted back into SET, and Postgres time units. Pure.
 */

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

export const literal = (v: string) => `'${v.replace(/'/g, "''")}'`;
export const ident = (v: string) => `"${v.replace(/"/g, '""')}"`;

/** One query returning the current value of each name, in order. */
export function readSettingsSql(names: readonly string[]): string {
  return `SELECT ${names.map(readOne).join(', ')}`;
}

/** The savepoint around a read-back by SHOW, so that an unknown name fails nothing of the client's. */
export const SHOW_SAVEPOINT = 'pglite_gateway_show';

/**
 * One query returning the current value of each name, one SHOW each, in order. SHOW takes no
 * snapshot (a SELECT does), so SET TRANSACTION ISOLATION LEVEL may still follow it. A name that
 * is not defined fails its SHOW: the savepoint keeps that from failing the client's transaction.
 */
export function showSettingsSql(names: readonly string[]): string {
  const shows = names.map((n) => `SHOW ${n.split('.').map(ident).join('.')}`);
  return [`SAVEPOINT ${SHOW_SAVEPOINT}`, ...shows, `RELEASE ${SHOW_SAVEPOINT}`].join('; ');
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
export function valueSql(name: string, value: string): string {
  if (value === '' || !QUOTED_LISTS.has(name.toLowerCase())) return literal(value);
  return listElements(value).map(literal).join(', ');
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

/**
 * Timeouts Postgres enforces by ending the connection (FATAL). In PGlite that ends the engine,
 * so the database would restart under all its clients: they never reach it (session-options.ts
 * at startup, statement-guard.ts in SQL).
 */
export const CONNECTION_TIMEOUTS: ReadonlySet<string> = new Set([
  'idle_in_transaction_session_timeout',
  'idle_session_timeout',
  'transaction_timeout',
]);
