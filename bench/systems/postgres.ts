import pg from 'pg';
import { postgresConfig, startPostgres15 } from '../../test/helpers/postgres.js';
import type { SystemUnderTest, Target } from './types.js';

/**
 * Native PostgreSQL 15 from the Debian binaries as the physical reference, started by the same
 * helper as the integration tests' server (test/helpers/postgres.ts: initdb in a temp dir, as the
 * `postgres` user via runuser when root), but with the stock configuration: fsync,
 * synchronous_commit and full_page_writes on. Trust authentication over plaintext TCP on
 * 127.0.0.1.
 */

function pgConfigFor(port: number, database: string): pg.ClientConfig {
  return { ...postgresConfig(port, database), connectionTimeoutMillis: 30_000 };
}

export async function startPostgres(binDir: string): Promise<SystemUnderTest> {
  const server = await startPostgres15({ binDir, tempPrefix: 'bench-pg-', durable: true });
  const { port } = server;
  return {
    kind: 'postgres',
    description:
      'PostgreSQL 15 (Debian binaries), stock config, fsync/synchronous_commit/full_page_writes on: plaintext, trust authentication',
    async createDatabase(name: string): Promise<Target> {
      const admin = new pg.Client(pgConfigFor(port, 'postgres'));
      await admin.connect();
      try {
        await admin.query(`create database "${name.replaceAll('"', '')}"`);
      } finally {
        await admin.end();
      }
      return {
        name,
        conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=${name} sslmode=disable`,
        env: {},
        pgConfig: pgConfigFor(port, name),
      };
    },
    async recover(): Promise<void> {
      // A failed pgbench run leaves nothing behind in a real server.
    },
    stop: server.stop,
  };
}
