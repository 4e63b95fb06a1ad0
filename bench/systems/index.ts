import { INSTALL_HINT, type Tools } from '../tools.js';
import { startGateway } from './gateway.js';
import { startPgliteSocket } from './pglite-socket.js';
import { startPostgres } from './postgres.js';
import type { SystemKind, SystemUnderTest, Target } from './types.js';

export type { SystemKind, SystemUnderTest, Target } from './types.js';
export { DEFAULT_SYSTEMS, SYSTEM_KINDS } from './types.js';

export interface SystemContext {
  tools: Tools;
  /** PGlite template for the gateway and pglite-socket (default: cached under the OS temp dir). */
  templateDir?: string;
}

/** Why a system cannot run on this machine, or undefined when it can. */
export function unavailable(kind: SystemKind, tools: Tools): string | undefined {
  if (kind === 'postgres' && !tools.postgresBinDir)
    return `PostgreSQL 15 server binaries missing (${INSTALL_HINT})`;
  return undefined;
}

export function startSystem(kind: SystemKind, ctx: SystemContext): Promise<SystemUnderTest> {
  switch (kind) {
    case 'gateway':
      return startGateway({ templateDir: ctx.templateDir });
    case 'gateway-matched':
      return startGateway({ templateDir: ctx.templateDir, matched: true });
    case 'pglite-socket':
      return startPgliteSocket({ templateDir: ctx.templateDir });
    case 'postgres': {
      if (!ctx.tools.postgresBinDir) throw new Error('PostgreSQL 15 server binaries missing');
      return startPostgres(ctx.tools.postgresBinDir);
    }
  }
}

/**
 * A system's databases, created once and shared by the benchmarks of one run: `bench` carries the
 * pgbench rows, `bench2` is the second database for scale and isolation.
 */
export type DatabaseSource = (name: string, opts?: { pgbenchTables?: boolean }) => Promise<Target>;

export function databaseSource(
  system: SystemUnderTest,
  initPgbenchTables: (target: Target) => Promise<void>,
): DatabaseSource {
  const targets = new Map<string, Promise<Target>>();
  const tables = new Map<string, Promise<void>>();
  return async (name, opts = {}) => {
    let created = targets.get(name);
    if (!created) {
      created = system.createDatabase(name);
      targets.set(name, created);
    }
    const target = await created;
    if (opts.pgbenchTables) {
      let init = tables.get(name);
      if (!init) {
        init = initPgbenchTables(target);
        tables.set(name, init);
      }
      await init;
    }
    return target;
  };
}
