/**
 * The roles of a database made from a template (issue 18). PGlite runs one backend whose
 * *authenticated* user is its bootstrap superuser, and Postgres lets such a session switch its
 * session authorization to anyone. So a `writer` client runs under a non-superuser session
 * authorization, and every way back that can run inside Postgres is closed here; the plain
 * statements that would switch back are refused by the gateway before they reach the database
 * (pooler/statement-guard.ts).
 *
 * - `gateway_template_owner` owns what the template's SQL (and its migrations) create.
 * - `gateway_writer` is who a writer client is: it owns what it creates itself, may read and
 *   write the template's tables (default privileges), but is not their owner, so it cannot drop,
 *   alter, truncate them nor disable their triggers, and holds no TRIGGER/TRUNCATE privilege.
 * - Dynamic SQL is what could switch identity without the gateway seeing the words: plpgsql is
 *   kept for the template owner only (DO blocks and plpgsql functions are refused to writers),
 *   set_config is revoked, and an event trigger refuses SQL functions whose body or SET clauses
 *   mention the session identity (bodies may be written with escapes the gateway cannot read).
 */

export const TEMPLATE_OWNER_ROLE = 'gateway_template_owner';
export const WRITER_ROLE = 'gateway_writer';
/** Schema of the gateway's own objects in a database (owned by the superuser, hidden from types). */
export const META_SCHEMA = 'gateway_meta';

/**
 * Creates the roles, grants and the routine guard once; later opens find the writer role and
 * write nothing (a database only read must not look written to the archiver).
 */
export const WRITER_SETUP_SQL = `
DO $setup$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '${WRITER_ROLE}') THEN RETURN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '${TEMPLATE_OWNER_ROLE}') THEN
    CREATE ROLE ${TEMPLATE_OWNER_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
  END IF;
  CREATE ROLE ${WRITER_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
  GRANT CREATE, USAGE ON SCHEMA public TO ${TEMPLATE_OWNER_ROLE}, ${WRITER_ROLE};
  GRANT CREATE, TEMPORARY ON DATABASE postgres TO ${TEMPLATE_OWNER_ROLE}, ${WRITER_ROLE};
  REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC;
  GRANT USAGE ON LANGUAGE plpgsql TO ${TEMPLATE_OWNER_ROLE};
  REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
  ALTER DEFAULT PRIVILEGES FOR ROLE ${TEMPLATE_OWNER_ROLE}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${WRITER_ROLE};
  ALTER DEFAULT PRIVILEGES FOR ROLE ${TEMPLATE_OWNER_ROLE}
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO ${WRITER_ROLE};
  ALTER DEFAULT PRIVILEGES FOR ROLE ${TEMPLATE_OWNER_ROLE} GRANT USAGE ON SCHEMAS TO ${WRITER_ROLE};
  CREATE SCHEMA IF NOT EXISTS ${META_SCHEMA};
  GRANT USAGE ON SCHEMA ${META_SCHEMA} TO PUBLIC;
  CREATE OR REPLACE FUNCTION ${META_SCHEMA}.routine_guard() RETURNS event_trigger
  LANGUAGE plpgsql AS $guard$
  DECLARE r record;
  BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN RETURN; END IF;
    FOR r IN SELECT p.prosrc, p.proconfig FROM pg_catalog.pg_event_trigger_ddl_commands() c
        JOIN pg_catalog.pg_proc p ON c.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = c.objid
    LOOP
      IF r.prosrc ~* '(authorization|discard)'
         OR pg_catalog.array_to_string(r.proconfig, ' ') ~* '(authorization|role)' THEN
        RAISE EXCEPTION 'permission denied: a function may not change the session identity'
          USING ERRCODE = '42501';
      END IF;
    END LOOP;
  END $guard$;
  CREATE EVENT TRIGGER gateway_routine_guard ON ddl_command_end
    WHEN TAG IN ('CREATE FUNCTION', 'ALTER FUNCTION', 'CREATE PROCEDURE', 'ALTER PROCEDURE', 'ALTER ROUTINE', 'CREATE AGGREGATE')
    EXECUTE FUNCTION ${META_SCHEMA}.routine_guard();
END $setup$;
`;

/** Puts a writer session back into its identity (at open, and after DISCARD ALL). */
export const WRITER_BASELINE_SQL = `SET SESSION AUTHORIZATION ${WRITER_ROLE}`;

/** Which template (and version) a database was made from, kept inside the database itself. */
export const TEMPLATE_META_SQL = `
CREATE TABLE IF NOT EXISTS ${META_SCHEMA}.template (name text NOT NULL, version integer NOT NULL);
GRANT SELECT, UPDATE ON ${META_SCHEMA}.template TO ${TEMPLATE_OWNER_ROLE};
`;

/** The row TEMPLATE_META_SQL's table holds from the start (version 0: before the template's SQL). */
export const insertTemplateRowSql = (name: string): string =>
  `INSERT INTO ${META_SCHEMA}.template (name, version) VALUES (${quoteLiteral(name)}, 0)`;

export const quoteLiteral = (v: string): string => `'${v.replace(/'/g, "''")}'`;

/** SQL run after a template's SQL or a migration, as the template owner: the version it is at. */
export const setTemplateVersionSql = (name: string, version: number): string =>
  `UPDATE ${META_SCHEMA}.template SET version = ${version} WHERE name = ${quoteLiteral(name)}`;

/** One row: the template version a database holds (none when it was not made from a template). */
export const READ_TEMPLATE_VERSION_SQL = `SELECT version FROM ${META_SCHEMA}.template LIMIT 1`;
