import pg from 'pg';
import type { Catalog, SqlClient } from './catalog.js';
import { openSqlCatalog } from './sql-catalog.js';

export interface PostgresCatalogOptions {
  /**
   * Called when an idle pooled connection fails (server restart, network cut). The pool already
   * discards that connection and the next query reconnects; default: ignore. Without a listener
   * `pg` would crash the process on such an error.
   */
  onError?: (err: Error) => void;
  /**
   * Fails a query that has no answer after this long and drops its connection (a partition that
   * swallows packets would otherwise hang it for the kernel's TCP timeouts). Default: none.
   */
  queryTimeoutMs?: number;
}

/**
 * A `SqlClient` over a small `pg.Pool`. The catalog is read on every login (credential lookup)
 * and written rarely, so a handful of connections suffices and keeps each node's footprint on a
 * shared server small. The URL carries a password: it is never logged or put in errors here.
 */
export function openPostgresSqlClient(url: string, options: PostgresCatalogOptions = {}): SqlClient {
  const pool = new pg.Pool({
    connectionString: url,
    max: 5,
    idleTimeoutMillis: 30_000,
    // Fail startup instead of hanging forever when the catalog server is unreachable.
    connectionTimeoutMillis: 10_000,
    application_name: 'pglite-gateway-catalog',
    ...(options.queryTimeoutMs ? { query_timeout: options.queryTimeoutMs } : {}),
  });
  pool.on('error', (err) => options.onError?.(err));
  let closed: Promise<void> | undefined;

  return {
    query: async <Row>(sql: string, params?: unknown[]) => {
      const result = await pool.query(sql, params);
      return { rows: result.rows as Row[] };
    },
    transaction: async <T>(fn: (tx: Pick<SqlClient, 'query'>) => Promise<T>) => {
      const client = await pool.connect();
      // A connection whose ROLLBACK failed is in an unknown state: destroy it instead of reusing it.
      let broken: Error | undefined;
      try {
        await client.query('begin');
        const result = await fn({
          query: async <Row>(sql: string, params?: unknown[]) => {
            const r = await client.query(sql, params);
            return { rows: r.rows as Row[] };
          },
        });
        await client.query('commit');
        return result;
      } catch (err) {
        await client.query('rollback').catch((rollbackErr: Error) => {
          broken = rollbackErr;
        });
        throw err;
      } finally {
        client.release(broken);
      }
    },
    close: () => {
      closed ??= pool.end();
      return closed;
    },
  };
}

/** Connects to an external PostgreSQL catalog (shared by every node) and migrates it. */
export async function openPostgresCatalog(
  url: string,
  options: PostgresCatalogOptions = {},
): Promise<Catalog> {
  return openSqlCatalog(openPostgresSqlClient(url, options));
}
