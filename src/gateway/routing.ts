import { errors, type GatewayError } from '../errors.js';
import { isValidDatabaseId, RESERVED_DATABASE_IDS } from '../ids.js';

/**
 * Decides which database a connection is for, from the TLS SNI name and the startup packet.
 * Pure: no I/O, so every hostile input can be unit-tested.
 */

export interface StartupOptions {
  /** `endpoint=<id>` from the options parameter, as Neon accepts it. */
  endpoint: string | undefined;
  /** `-c name=value` and `--name=value` settings, applied to this client's session. */
  settings: Record<string, string>;
}

/** Splits the startup `options` string as the server does: whitespace-separated, `\` escapes. */
function splitOptions(options: string): string[] {
  const words: string[] = [];
  let current = '';
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i] as string;
    if (ch === '\\' && i + 1 < options.length) {
      current += options[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else {
      current += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(current);
  return words;
}

export function parseStartupOptions(options: string | undefined): StartupOptions {
  const result: StartupOptions = { endpoint: undefined, settings: {} };
  if (!options) return result;
  const words = splitOptions(options);
  for (let i = 0; i < words.length; i++) {
    const word = words[i] as string;
    let setting: string | undefined;
    if (word === '-c') setting = words[++i];
    else if (word.startsWith('-c')) setting = word.slice(2);
    else if (word.startsWith('--')) setting = word.slice(2);
    else if (word.startsWith('endpoint=')) result.endpoint = word.slice('endpoint='.length);
    if (setting === undefined) continue;
    const eq = setting.indexOf('=');
    if (eq <= 0) continue;
    const name = setting.slice(0, eq).replace(/-/g, '_');
    const value = setting.slice(eq + 1);
    if (name === 'endpoint') result.endpoint = value;
    else result.settings[name] = value;
  }
  return result;
}

export interface RouteInput {
  /** SNI host name, undefined when the client sent none. */
  serverName: string | undefined;
  /** Startup packet parameters (user, database, options, ...). */
  params: Record<string, string>;
  wildcardDomain: string;
}

export type Route =
  | { ok: true; id: string; source: 'sni' | 'options' | 'database'; options: StartupOptions }
  | { ok: false; error: GatewayError };

/** The database id named by an SNI host, or undefined when the name is not under our domain. */
export function idFromServerName(serverName: string | undefined, domain: string): string | undefined {
  if (!serverName) return undefined;
  const name = serverName.toLowerCase();
  const suffix = `.${domain}`;
  if (!name.endsWith(suffix) && !name.endsWith(`${suffix}.`)) return undefined;
  // A trailing dot or a nested label is never a valid id; returning it lets validation refuse it.
  return name.endsWith('.') ? `${name.slice(0, -suffix.length - 1)}.` : name.slice(0, -suffix.length);
}

export function routeConnection(input: RouteInput): Route {
  const options = parseStartupOptions(input.params.options);
  const sniId = idFromServerName(input.serverName, input.wildcardDomain);
  const endpoint = options.endpoint;
  const database = input.params.database;

  const fail = (error: GatewayError): Route => ({ ok: false, error });
  const ok = (id: string, source: 'sni' | 'options' | 'database'): Route =>
    isValidDatabaseId(id) ? { ok: true, id, source, options } : fail(errors.invalidDatabaseId());

  if (sniId !== undefined) {
    if (!isValidDatabaseId(sniId)) return fail(errors.invalidDatabaseId());
    if (endpoint !== undefined && endpoint !== sniId) return fail(errors.databaseIdMismatch(sniId, endpoint));
    // Drivers default the database name to the user name, so those are not a disagreement.
    const harmless = [sniId, 'postgres', input.params.user, '', undefined];
    if (!harmless.includes(database)) return fail(errors.databaseIdMismatch(sniId, String(database)));
    return ok(sniId, 'sni');
  }
  if (endpoint !== undefined) return ok(endpoint, 'options');
  // libpq always sends a dbname, the user name by default: that, `postgres` or a template names
  // no database. Refused before authentication, from the input alone (nothing about what exists).
  const unnamed = [undefined, '', input.params.user, ...RESERVED_DATABASE_IDS];
  if (!unnamed.includes(database)) return ok(database as string, 'database');
  return fail(errors.noDatabaseId(input.wildcardDomain));
}
