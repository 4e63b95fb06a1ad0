import type pg from 'pg';

/** The three systems every benchmark row is measured on, in table order. */
export const SYSTEM_KINDS = ['gateway', 'pglite-socket', 'postgres'] as const;
export type SystemKind = (typeof SYSTEM_KINDS)[number];

/** One database of a system under test, as clients reach it. */
export interface Target {
  readonly name: string;
  /** libpq conninfo for pgbench and psql. */
  conninfo: string;
  /** Extra environment for libpq clients (PGPASSWORD). */
  env: Record<string, string>;
  /** The same database for node-postgres. */
  pgConfig: pg.ClientConfig;
}

export interface SystemUnderTest {
  readonly kind: SystemKind;
  /** One line for the report: what runs, how clients connect. */
  readonly description: string;
  /** Creates an empty database (a fresh PGDATA, or CREATE DATABASE) and returns how to reach it. */
  createDatabase(name: string): Promise<Target>;
  /**
   * Called after a failed run so one failure does not spill into the next row: restarts whatever
   * serves this target (a no-op where nothing needs it). Updates the target in place.
   */
  recover(target: Target): Promise<void>;
  /** Stops everything and removes temp directories. Idempotent. */
  stop(): Promise<void>;
}
