import {
  CatalogConflictError,
  type SqlClient,
  type TemplateRecord,
  type TemplateStatePatch,
} from './catalog.js';

/**
 * The template half of the SQL catalog (issue 18), over the same minimal `SqlClient`. Kept apart
 * from sql-catalog.ts, which delegates here.
 */

const SQLSTATE_UNIQUE_VIOLATION = '23505';
const SQLSTATE_FOREIGN_KEY_VIOLATION = '23503';

interface TemplateRow {
  name: string;
  version: number | string;
  created_at: Date | string;
  updated_at: Date | string;
  databases: number | string | bigint;
}

const TEMPLATE_SELECT = `select t.name, t.version, t.created_at, t.updated_at,
  (select count(*) from gateway_databases d where d.template_name = t.name) as databases
  from gateway_templates t`;

const toDate = (v: Date | string) => (v instanceof Date ? v : new Date(v));
const code = (err: unknown) => (err as { code?: unknown } | null)?.code;

function toTemplate(row: TemplateRow): TemplateRecord {
  return {
    name: row.name,
    version: Number(row.version),
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
    databases: Number(row.databases),
  };
}

export async function createTemplate(sql: SqlClient, name: string, text: string): Promise<TemplateRecord> {
  try {
    await sql.transaction(async (tx) => {
      await tx.query('insert into gateway_templates (name, version) values ($1, 1)', [name]);
      await tx.query(
        'insert into gateway_template_versions (template_name, version, sql) values ($1, 1, $2)',
        [name, text],
      );
    });
  } catch (err) {
    if (code(err) === SQLSTATE_UNIQUE_VIOLATION)
      throw new CatalogConflictError(`template "${name}" already exists`);
    throw err;
  }
  const created = await getTemplate(sql, name);
  if (!created) throw new Error(`catalog: template "${name}" vanished after its creation`);
  return created;
}

export async function getTemplate(sql: SqlClient, name: string): Promise<TemplateRecord | undefined> {
  const { rows } = await sql.query<TemplateRow>(`${TEMPLATE_SELECT} where t.name = $1`, [name]);
  return rows[0] && toTemplate(rows[0]);
}

export async function listTemplates(sql: SqlClient): Promise<TemplateRecord[]> {
  const { rows } = await sql.query<TemplateRow>(`${TEMPLATE_SELECT} order by t.name`);
  return rows.map(toTemplate);
}

export async function addTemplateVersion(
  sql: SqlClient,
  name: string,
  version: number,
  text: string,
): Promise<TemplateRecord | undefined> {
  const moved = await sql.transaction(async (tx) => {
    // Compare-and-set: two updates racing for the same version, one wins.
    const { rows } = await tx.query(
      'update gateway_templates set version = $2, updated_at = now() where name = $1 and version = $2 - 1 returning name',
      [name, version],
    );
    if (rows.length === 0) return false;
    await tx.query(
      'insert into gateway_template_versions (template_name, version, sql) values ($1, $2, $3)',
      [name, version, text],
    );
    return true;
  });
  if (moved) return getTemplate(sql, name);
  const current = await getTemplate(sql, name);
  if (!current) return undefined;
  throw new CatalogConflictError(`template "${name}" is at version ${current.version}, not ${version - 1}`);
}

export async function templateSteps(sql: SqlClient, name: string): Promise<string[]> {
  const { rows } = await sql.query<{ sql: string }>(
    'select sql from gateway_template_versions where template_name = $1 order by version',
    [name],
  );
  return rows.map((r) => r.sql);
}

export async function deleteTemplate(
  sql: SqlClient,
  name: string,
): Promise<'deleted' | 'missing' | 'in-use'> {
  try {
    const { rows } = await sql.query('delete from gateway_templates where name = $1 returning name', [name]);
    return rows.length > 0 ? 'deleted' : 'missing';
  } catch (err) {
    if (code(err) === SQLSTATE_FOREIGN_KEY_VIOLATION) return 'in-use';
    throw err;
  }
}

export async function setTemplateState(
  sql: SqlClient,
  id: string,
  patch: TemplateStatePatch,
): Promise<boolean> {
  const sets: string[] = [];
  const params: unknown[] = [id];
  if (patch.templateVersion !== undefined) {
    params.push(patch.templateVersion);
    sets.push(`template_version = $${params.length}`);
  }
  if (patch.migrationError !== undefined) {
    params.push(patch.migrationError);
    sets.push(`migration_error = $${params.length}`);
  }
  if (sets.length === 0) return true;
  const { rows } = await sql.query(
    `update gateway_databases set ${sets.join(', ')} where id = $1 returning id`,
    params,
  );
  return rows.length > 0;
}
