import type { SchemaModel } from './types-gen.js';

/**
 * The pg_catalog query behind `db types` (issue 18): one row, one JSON column holding the
 * `SchemaModel` of every user schema (not pg_catalog, information_schema, the gateway's own
 * schema, temporary schemas, nor objects that belong to an extension). Read by any role.
 */
export const SCHEMA_MODEL_SQL = `
WITH schemas AS (
  SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'gateway_meta')
    AND n.nspname !~ '^pg_(toast_)?temp_'
),
rels AS (
  SELECT c.oid, s.nspname AS schema, c.relname AS name,
    CASE WHEN c.relkind IN ('v', 'm') THEN 'view' ELSE 'table' END AS kind
  FROM pg_catalog.pg_class c JOIN schemas s ON s.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
),
cols AS (
  SELECT a.attrelid, a.attnum, a.attname AS name, a.atttypid::int AS type,
    NOT a.attnotnull AS nullable, a.atthasdef AS "hasDefault",
    a.attidentity <> '' AS identity, a.attgenerated <> '' AS generated
  FROM pg_catalog.pg_attribute a
  WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attrelid IN (SELECT oid FROM rels)
),
user_types AS (
  SELECT t.oid FROM pg_catalog.pg_type t JOIN schemas s ON s.oid = t.typnamespace
  WHERE t.typtype IN ('e', 'd') OR (t.typtype = 'c' AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c'))
),
used AS (
  SELECT type::oid AS oid FROM cols UNION SELECT oid FROM user_types
  UNION SELECT a.atttypid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.typrelid = a.attrelid
    WHERE t.oid IN (SELECT oid FROM user_types) AND a.attnum > 0 AND NOT a.attisdropped
),
reach AS (
  SELECT oid FROM used
  UNION SELECT t.typelem FROM pg_catalog.pg_type t JOIN used u ON u.oid = t.oid WHERE t.typelem <> 0
  UNION SELECT t.typbasetype FROM pg_catalog.pg_type t JOIN used u ON u.oid = t.oid WHERE t.typbasetype <> 0
)
SELECT pg_catalog.json_build_object(
  'relations', COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'schema', r.schema, 'name', r.name, 'kind', r.kind,
      'columns', COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
          'name', c.name, 'type', c.type, 'nullable', c.nullable, 'hasDefault', c."hasDefault",
          'identity', c.identity, 'generated', c.generated) ORDER BY c.attnum)
        FROM cols c WHERE c.attrelid = r.oid), '[]'::json)) ORDER BY r.schema, r.name)
    FROM rels r), '[]'::json),
  'types', COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'oid', t.oid::int, 'schema', n.nspname, 'name', t.typname, 'kind', t.typtype,
      'elem', t.typelem::int, 'base', t.typbasetype::int,
      'labels', (SELECT pg_catalog.json_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
      'attributes', CASE WHEN t.typtype = 'c' AND t.oid IN (SELECT oid FROM user_types) THEN
        (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
          'name', a.attname, 'type', a.atttypid::int, 'nullable', NOT a.attnotnull) ORDER BY a.attnum)
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
      END) ORDER BY t.oid)
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE t.oid IN (SELECT oid FROM reach)), '[]'::json)
)::text AS model`;

/** Parses the query's one value; nulls of json_build_object become absent fields. */
export function parseSchemaModel(text: string): SchemaModel {
  const raw = JSON.parse(text) as SchemaModel;
  for (const t of raw.types) {
    if (t.labels === null) delete t.labels;
    if (t.attributes === null) delete t.attributes;
  }
  return raw;
}
