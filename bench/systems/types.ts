import type pg from 'pg';

/**
 * The systems a benchmark row can be measured on, in table order. `gateway-matched` is the
 * gateway set up the way pglite-socket runs (plaintext, FSYNC=off, PGlite's 128 MB of
 * shared_buffers; SCRAM stays), so a ratio against pglite-socket shows the gateway's own cost
 * apart from what TLS, fsync and the smaller buffers cost. It runs only when named in --systems.
 */
export const SYSTEM_KINDS = ['gateway', 'gateway-matched', 'pglite-socket', 'postgres'] as const;
export type SystemKind = (typeof SYSTEM_KINDS)[number];
/** What runs without --systems. */
export const DEFAULT_SYSTEMS: readonly SystemKind[] = ['gateway', 'pglite-socket', 'postgres'];

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
