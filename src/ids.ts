import path from 'node:path';
import { errors } from './errors.js';

/**
 * The database id grammar, the ids no database may take, and where a database's data lives.
 * A leaf module: gateway routing, the registry, the admin service and the CLI all use it.
 */

const DATABASE_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function isValidDatabaseId(id: string): boolean {
  return DATABASE_ID.test(id);
}

/**
 * Valid ids no database may be created with: a dbname equal to one of these is what clients send
 * when they name no database (libpq's `postgres` maintenance database, the templates), so such a
 * database could never be reached by dbname.
 */
export const RESERVED_DATABASE_IDS: ReadonlySet<string> = new Set(['postgres', 'template0', 'template1']);

/**
 * The first labels of the host names the Neon serverless driver derives for SQL over HTTP
 * (`api.<domain>`, `apiauth.<domain>`): a database with such an id would collide with them.
 */
export const API_HOST_IDS: ReadonlySet<string> = new Set(['api', 'apiauth']);

export function isReservedDatabaseId(id: string): boolean {
  return RESERVED_DATABASE_IDS.has(id) || API_HOST_IDS.has(id);
}

/** Path of a database's PGDATA; refuses anything that is not a plain child of `dataDir`. */
export function databasePath(dataDir: string, id: string): string {
  if (!isValidDatabaseId(id)) throw errors.invalidDatabaseId();
  const root = path.resolve(dataDir);
  const resolved = path.resolve(root, id);
  if (path.dirname(resolved) !== root) throw errors.invalidDatabaseId();
  return resolved;
}
