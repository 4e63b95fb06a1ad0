import { errors, GatewayError } from '../errors.js';
import { isAssign, setNameStart } from './setting-statements.js';
import { CONNECTION_TIMEOUTS, isServableEncoding } from './setting-values.js';
import { hasWords, identifierName, leadingWords, statements, type Token } from './sql-lexer.js';

/**
 * PGlite dies for good (exit(1), then a spinning hang) when it starts COPY FROM STDIN without the
 * data in the same call. So the gateway must recognise such statements before sending them.
 */

export type CopyFromStdin = 'none' | 'single' | 'embedded';

/** 'single': the text is exactly one COPY ... FROM STDIN; 'embedded': it hides one among others. */
export function detectCopyFromStdin(sql: string): CopyFromStdin {
  if (!/stdin/i.test(sql)) return 'none';
  return copyFromStdin(statements(sql));
}

function copyFromStdin(parsed: Token[][]): CopyFromStdin {
  const index = parsed.findIndex((s) => leadingWords(s, 1)[0] === 'copy' && hasWords(s, 'from', 'stdin'));
  if (index < 0) return 'none';
  return parsed.length === 1 ? 'single' : 'embedded';
}

/**
 * Statements the gateway answers with an error of its own instead of sending them on: PGlite
 * cannot do them, or they would break the database for good. A real SQLSTATE each.
 */
const refusals = {
  copyInBatch: () =>
    new GatewayError(
      '0A000',
      'ERROR',
      'COPY FROM STDIN must be sent as a query of its own',
      'copy_in_batch',
      'send the COPY statement alone (not together with other statements in one query string)',
    ),
  copyProgram: () =>
    new GatewayError(
      '0A000',
      'ERROR',
      'COPY TO/FROM PROGRAM is not supported',
      'copy_program',
      'use COPY ... FROM STDIN / TO STDOUT',
    ),
  copyFile: () =>
    new GatewayError(
      '0A000',
      'ERROR',
      'COPY to or from a server file is not supported',
      'copy_file',
      'use COPY ... FROM STDIN / TO STDOUT (psql: \\copy)',
    ),
  serverFile: () =>
    new GatewayError(
      '0A000',
      'ERROR',
      'server-side large object import/export is not supported',
      'server_file',
    ),
  tablespace: () =>
    new GatewayError(
      '0A000',
      'ERROR',
      'tablespaces are not supported: each database lives in one data directory',
      'tablespace',
    ),
  identity: () => errors.identityFixed('ERROR'),
  connectionTimeout: (name: string) =>
    new GatewayError(
      '0A000',
      'ERROR',
      `${name} cannot be set in a shared session: when it fires, Postgres ends the session, which all clients of this database share`,
      'connection_timeout',
      name === 'idle_in_transaction_session_timeout'
        ? 'set it when connecting (options=-c idle_in_transaction_session_timeout=5s): the gateway then ends this client alone'
        : 'the gateway ends idle transactions after its IDLE_IN_TRANSACTION_TIMEOUT',
    ),
} as const;

/** Setting a connection timeout (setting-values.ts) to 0 or DEFAULT is harmless. */
const NO_TIMEOUT = /^(0+(\.0*)?(us|ms|s|min|h|d)?|default)$/i;

/** The connection timeout a statement sets to something other than 0 or DEFAULT, if any. */
function connectionTimeoutSet(statement: readonly Token[]): string | undefined {
  const [first] = leadingWords(statement, 1);
  if (first === 'set') {
    const at = setNameStart(statement);
    const name = nameAt(statement, at);
    if (!name || !CONNECTION_TIMEOUTS.has(name)) return undefined;
    const from = isAssign(statement[at + 1]) ? at + 2 : at + 1;
    const value = statement
      .slice(from)
      .map((t) => t.text.trim())
      .join('');
    return NO_TIMEOUT.test(value) ? undefined : name;
  }
  for (let i = 0; i + 4 < statement.length; i++) {
    const [fn, open, name, comma, value] = statement.slice(i, i + 5);
    if (fn?.kind !== 'word' || fn.text !== 'set_config' || open?.text !== '(' || comma?.text !== ',')
      continue;
    const setting = name?.kind === 'string' ? name.text.trim().toLowerCase() : undefined;
    if (
      setting &&
      CONNECTION_TIMEOUTS.has(setting) &&
      !(value?.kind === 'string' && NO_TIMEOUT.test(value.text.trim()))
    )
      return setting;
  }
  return undefined;
}

const SERVER_FILE_FUNCTIONS: ReadonlySet<string> = new Set(['lo_import', 'lo_export']);

export type StatementVerdict =
  | { kind: 'pass' }
  | { kind: 'copy-in' }
  | { kind: 'refuse'; error: GatewayError };

/**
 * Only texts with one of these words are lexed; everything else passes at the cost of one regex.
 * `u&` too: a U&"..." identifier can spell any name without its letters (U&"lo\005Fexport").
 */
const SUSPECT = /copy|lo_import|lo_export|tablespace|authorization|discard|encoding|names|timeout|u&/i;

/**
 * The name the token at `i` stands for, as Postgres reads it, lowercased for comparison: a word,
 * or a quoted identifier with its U&"..." escapes decoded (a name the guards look for may be
 * written `"lo_export"` or `U&"session\005Fauthorization"`).
 */
const nameAt = (statement: readonly Token[], i: number): string | undefined =>
  identifierName(statement[i], statement.slice(i + 1, i + 3))?.toLowerCase();

/**
 * Decides how a client's SQL text may reach the database. The session identity is fixed for a
 * read-only database and for a writer one (its engine has a baseline identity).
 */
export function judgeStatement(
  sql: string,
  opts: { readOnly: boolean; engine?: { readonly baselineSql: string } },
): StatementVerdict {
  if (!SUSPECT.test(sql)) return { kind: 'pass' };
  const fixedIdentity = opts.readOnly || Boolean(opts.engine?.baselineSql);
  const parsed = statements(sql);
  for (const statement of parsed) {
    const [first, second] = leadingWords(statement, 2);
    if (first === 'copy' && (hasWords(statement, 'from', 'program') || hasWords(statement, 'to', 'program')))
      return { kind: 'refuse', error: refusals.copyProgram() };
    // A server file is a file in the database's own directory (or its WASM file system): writing
    // one can make the database unable to start (postgresql.conf) or its snapshots unusable.
    if (first === 'copy' && copiesServerFile(statement))
      return { kind: 'refuse', error: refusals.copyFile() };
    if (statement.some((_, i) => SERVER_FILE_FUNCTIONS.has(nameAt(statement, i) ?? '')))
      return { kind: 'refuse', error: refusals.serverFile() };
    if (first === 'create' && second === 'tablespace')
      return { kind: 'refuse', error: refusals.tablespace() };
    if (fixedIdentity && changesIdentity(statement)) return { kind: 'refuse', error: refusals.identity() };
    const timeout = connectionTimeoutSet(statement);
    if (timeout) return { kind: 'refuse', error: refusals.connectionTimeout(timeout) };
    const encoding = encodingSet(statement);
    if (encoding !== undefined && !isServableEncoding(encoding))
      return { kind: 'refuse', error: errors.clientEncodingUnsupported(encoding, 'ERROR') };
  }
  const copy = copyFromStdin(parsed);
  if (copy === 'embedded') return { kind: 'refuse', error: refusals.copyInBatch() };
  return copy === 'single' ? { kind: 'copy-in' } : { kind: 'pass' };
}

/**
 * The client_encoding a statement sets: `SET [SESSION|LOCAL] client_encoding TO|= x`,
 * `SET NAMES x`, or `set_config('client_encoding', 'x', ...)`; undefined when it sets none.
 */
function encodingSet(statement: readonly Token[]): string | undefined {
  const words = leadingWords(statement, 3);
  if (words[0] === 'set') {
    let i = words[1] === 'session' || words[1] === 'local' ? 2 : 1;
    const name = statement[i];
    if (name?.kind === 'word' && name.text === 'names') return valueAt(statement, i + 1);
    if (!name || !/^client_encoding$/i.test(name.text) || name.kind === 'string') return undefined;
    i++;
    const op = statement[i];
    if (op?.kind === 'word' && op.text === 'from') return undefined; // SET ... FROM CURRENT
    if ((op?.kind === 'word' && op.text === 'to') || (op?.kind === 'symbol' && op.text === '=')) i++;
    return valueAt(statement, i);
  }
  for (let i = 0; i + 4 < statement.length; i++) {
    const [fn, open, name, comma, value] = statement.slice(i, i + 5);
    if (fn?.kind === 'word' && fn.text === 'set_config' && open?.text === '(' && comma?.text === ',')
      if (name?.kind === 'string' && /^\s*client_encoding\s*$/i.test(name.text) && value?.kind === 'string')
        return value.text;
  }
  return undefined;
}

const valueAt = (statement: readonly Token[], i: number): string | undefined => {
  const t = statement[i];
  return t && t.kind !== 'symbol' ? t.text : undefined;
};

/** `COPY ... FROM 'file'` / `COPY ... TO 'file'`: a string right after FROM/TO. */
function copiesServerFile(statement: readonly Token[]): boolean {
  return statement.some((t, i) => {
    const next = statement[i + 1];
    return t.kind === 'word' && (t.text === 'from' || t.text === 'to') && next?.kind === 'string';
  });
}

/**
 * In a read-only or writer database the session runs under a restricted session authorization;
 * these are the statements that could change it back (set_config and dynamic SQL are revoked
 * there, so the GUC's name as a string only matters as set_config's argument, refused all the
 * same; function bodies are checked by the database's event trigger, pgdata/template-roles.ts).
 */
function changesIdentity(statement: readonly Token[]): boolean {
  if (hasWords(statement, 'session', 'authorization') || hasWords(statement, 'discard', 'all')) return true;
  return statement.some((t, i) =>
    /^\s*session_authorization\s*$/i.test((t.kind === 'string' ? t.text : nameAt(statement, i)) ?? ''),
  );
}

/**
 * DISCARD ALL or DEALLOCATE [PREPARE] ALL in a client's text. On the shared session they would
 * drop every client's prepared statements (and DISCARD ALL their LISTENs), so the pooler does
 * them for the one client itself; `alone`: the statement is the text's only one, with nothing
 * after ALL (anything else is refused, see forgetAllInBatch).
 */
export function forgetAll(sql: string): { kind: 'discard' | 'deallocate'; alone: boolean } | undefined {
  if (!/discard|deallocate/i.test(sql)) return undefined;
  const parsed = statements(sql);
  for (const statement of parsed) {
    const [first, second, third] = leadingWords(statement, 3);
    const length =
      first === 'discard' && second === 'all'
        ? 2
        : first === 'deallocate' && second === 'all'
          ? 2
          : first === 'deallocate' && second === 'prepare' && third === 'all'
            ? 3
            : 0;
    if (length === 0) continue;
    return {
      kind: first === 'discard' ? 'discard' : 'deallocate',
      alone: parsed.length === 1 && statement.length === length,
    };
  }
  return undefined;
}

/**
 * The names of the `DEALLOCATE [PREPARE] name` statements in a client's text (ALL is forgetAll's),
 * as Postgres reads them: unquoted ones lowercased, `"S1"` as written, U&"..." decoded. A
 * protocol-level statement lives in the session under another name (statements.ts), so the
 * pooler does those for the client; `alone`: the text is exactly one DEALLOCATE statement.
 */
export function deallocatedNames(sql: string): { names: string[]; alone: boolean } | undefined {
  if (!/deallocate/i.test(sql)) return undefined;
  const parsed = statements(sql);
  const names: string[] = [];
  for (const statement of parsed) {
    const name = deallocatedName(statement);
    if (name !== undefined) names.push(name);
  }
  return names.length > 0 ? { names, alone: parsed.length === 1 } : undefined;
}

function deallocatedName(statement: readonly Token[]): string | undefined {
  if (leadingWords(statement, 1)[0] !== 'deallocate') return undefined;
  // PREPARE is the optional keyword unless nothing follows it: `DEALLOCATE prepare` names "prepare".
  const second = statement[1];
  const at = second?.kind === 'word' && second.text === 'prepare' && statement.length > 2 ? 2 : 1;
  const token = statement[at];
  if (token?.kind === 'word' && token.text === 'all') return undefined;
  // Nothing may follow the name but a U&"..." name's UESCAPE 'c'; anything else is Postgres'
  // syntax error to report, so the text is left as it is.
  const rest = statement.slice(at + 1);
  const [word, escapeChar] = rest;
  const uescape =
    token?.kind === 'ident' &&
    token.unicode &&
    rest.length === 2 &&
    word?.kind === 'word' &&
    word.text === 'uescape' &&
    escapeChar?.kind === 'string';
  if (rest.length > 0 && !uescape) return undefined;
  return identifierName(token, rest);
}
