import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { createFromTemplate, TEMPLATE_START_PARAMS } from './template.js';
import {
  insertTemplateRowSql,
  setTemplateVersionSql,
  TEMPLATE_META_SQL,
  TEMPLATE_OWNER_ROLE,
  WRITER_SETUP_SQL,
} from './template-roles.js';

/**
 * A named template's data directory (issue 18): the base template, the writer roles, then the
 * template's SQL and each of its migrations in order, run as the template owner. Built once per
 * version, so creating a database from it is a copy like any other create; never re-run per
 * database.
 */

/** The template's SQL failed; the message is Postgres' (shown to the administrator as a 400). */
export class TemplateSqlError extends Error {
  constructor(
    message: string,
    readonly step: number,
    readonly sqlState: string | undefined,
  ) {
    super(message);
  }
}

export interface TemplateBuild {
  /** The base template (pgdata/template.ts). */
  baseDir: string;
  /** Where the built directory goes; replaced atomically when it exists. */
  dest: string;
  name: string;
  /** steps[0] is the template's SQL (version 1), steps[i] the migration to version i + 1. */
  steps: readonly string[];
}

/** Where version `version` of template `name` is kept under `templatesDir`. */
export function templateVersionDir(templatesDir: string, name: string, version: number): string {
  return path.join(templatesDir, name, `v${version}`);
}

/**
 * A Postgres session on a data directory, for building templates: the server passes one that runs
 * in an engine worker (so a build never blocks its event loop); the CLI without a server uses
 * PGlite in-process (`pgliteSession`).
 */
export interface BuildSession {
  /** Runs SQL (one or more statements); rejects with `{message, code}` on a Postgres error. */
  exec(sql: string): Promise<void>;
  /** The first column of the first row of a query, as text. */
  value(sql: string): Promise<string | undefined>;
  close(): Promise<void>;
}

export type OpenBuildSession = (dataDir: string) => Promise<BuildSession>;

/** A BuildSession over PGlite in this thread. */
export const pgliteSession: OpenBuildSession = async (dataDir) => {
  const pg = new PGlite({ dataDir, startParams: TEMPLATE_START_PARAMS });
  await pg.waitReady;
  return {
    exec: async (sql) => {
      await pg.exec(sql);
    },
    value: async (sql) => {
      const { rows } = await pg.query<Record<string, unknown>>(sql);
      const first = rows[0] ? Object.values(rows[0])[0] : undefined;
      return first === undefined || first === null ? undefined : String(first);
    },
    close: () => pg.close(),
  };
};

/** Builds the data directory of a template at version `steps.length`. */
export async function buildTemplateDir(
  build: TemplateBuild,
  open: OpenBuildSession = pgliteSession,
): Promise<void> {
  await mkdir(path.dirname(build.dest), { recursive: true });
  const tmp = `${build.dest}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await createFromTemplate(build.baseDir, tmp);
    const pg = await open(tmp);
    try {
      await pg.exec(WRITER_SETUP_SQL);
      await pg.exec(`${TEMPLATE_META_SQL}; ${insertTemplateRowSql(build.name)}`);
      for (const [i, sql] of build.steps.entries()) {
        await pg.exec(`SET SESSION AUTHORIZATION ${TEMPLATE_OWNER_ROLE}`);
        await pg
          .exec(`BEGIN; ${sql}\n; ${setTemplateVersionSql(build.name, i + 1)}; COMMIT`)
          .catch(async (err: { message?: string; code?: string }) => {
            await pg.exec('ROLLBACK').catch(() => undefined);
            throw new TemplateSqlError(
              `${i === 0 ? 'template SQL' : `migration to version ${i + 1}`} failed: ${err.message ?? String(err)}`,
              i + 1,
              err.code,
            );
          });
        await pg.exec('SET SESSION AUTHORIZATION postgres');
      }
      await pg.exec('CHECKPOINT');
    } finally {
      await pg.close().catch(() => undefined);
    }
    await rm(build.dest, { recursive: true, force: true });
    await rename(tmp, build.dest);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Runs one query on a throwaway copy of the data directory `dir` (so the directory itself, maybe
 * a template other creates copy, is never opened) and returns the first column of its first row.
 */
export async function queryDataDirCopy(
  dir: string,
  sql: string,
  open: OpenBuildSession = pgliteSession,
): Promise<string | undefined> {
  const tmp = `${dir}.query-${randomBytes(4).toString('hex')}`;
  try {
    await createFromTemplate(dir, tmp);
    const pg = await open(tmp);
    try {
      return await pg.value(sql);
    } finally {
      await pg.close().catch(() => undefined);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
