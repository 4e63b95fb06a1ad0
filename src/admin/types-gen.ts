/**
 * TypeScript types of a database's schema (issue 18), in the shape supabase's generator made
 * familiar: `Database[schema].Tables[table].Row | Insert | Update`, `Views[view].Row`, `Enums`,
 * `CompositeTypes`. Values are typed as node-postgres returns them with its default parsers
 * (pg-types), which choose by type OID: int8 and numeric come back as strings, json as whatever
 * JSON.parse gives (unknown), timestamps and dates as Date, arrays of known element types as
 * arrays, anything it does not know (enum arrays, composites, ranges) as the text Postgres sent.
 * Pure: the model comes from `types-schema.ts`'s pg_catalog query.
 */

export interface ColumnModel {
  name: string;
  /** pg_type OID (a domain's own OID: mapped through its base type, as Postgres reports it). */
  type: number;
  nullable: boolean;
  hasDefault: boolean;
  /** GENERATED ... AS IDENTITY. */
  identity: boolean;
  /** GENERATED ALWAYS AS (...) STORED: never written by clients. */
  generated: boolean;
}

export interface RelationModel {
  schema: string;
  name: string;
  kind: 'table' | 'view';
  columns: ColumnModel[];
}

export interface TypeModel {
  oid: number;
  schema: string;
  name: string;
  /** pg_type.typtype: b base, e enum, d domain, c composite, r range, m multirange, p pseudo. */
  kind: string;
  /** Element type of an array type (0 otherwise). */
  elem: number;
  /** Base type of a domain (0 otherwise). */
  base: number;
  /** Enum labels, in order. */
  labels?: string[];
  /** Composite type attributes. */
  attributes?: { name: string; type: number; nullable: boolean }[];
}

export interface SchemaModel {
  relations: RelationModel[];
  types: TypeModel[];
}

const INTERVAL =
  '{ years?: number; months?: number; days?: number; hours?: number; minutes?: number; seconds?: number; milliseconds?: number }';
const POINT = '{ x: number; y: number }';
const CIRCLE = '{ x: number; y: number; radius: number }';

/** What node-postgres' default text parsers return, by type OID (pg-types/lib/textParsers.js). */
const PARSED: ReadonlyMap<number, string> = new Map([
  [16, 'boolean'],
  [17, 'Buffer'],
  [20, 'string'],
  [21, 'number'],
  [23, 'number'],
  [26, 'number'],
  [114, 'unknown'],
  [3802, 'unknown'],
  [600, POINT],
  [700, 'number'],
  [701, 'number'],
  [718, CIRCLE],
  [1082, 'Date'],
  [1114, 'Date'],
  [1184, 'Date'],
  [1186, INTERVAL],
  [1000, 'boolean[]'],
  [1001, 'Buffer[]'],
  [1005, 'number[]'],
  [1007, 'number[]'],
  [1028, 'number[]'],
  [1016, 'string[]'],
  [1017, `${POINT}[]`],
  [1021, 'number[]'],
  [1022, 'number[]'],
  // numeric[] goes through parseFloat (unlike numeric itself).
  [1231, 'number[]'],
  [1115, 'Date[]'],
  [1182, 'Date[]'],
  [1185, 'Date[]'],
  [1187, `${INTERVAL}[]`],
  [199, 'unknown[]'],
  [3807, 'unknown[]'],
  ...[651, 1014, 1015, 1008, 1009, 1040, 1041, 3907, 2951, 791, 1183, 1270].map(
    (oid) => [oid, 'string[]'] as const,
  ),
]);

/** What a client may send for a value of a Row type (node-postgres serialises these). */
function widenForInput(type: string): string {
  if (type === 'Date') return 'Date | string';
  if (type === 'Date[]') return '(Date | string)[]';
  return type;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const key = (name: string) => (IDENTIFIER.test(name) ? name : JSON.stringify(name));
const literalUnion = (labels: readonly string[]) =>
  labels.length === 0 ? 'never' : labels.map((l) => JSON.stringify(l)).join(' | ');

/** Maps type OIDs to TypeScript types for one model. */
export class TypeMapper {
  private readonly types: ReadonlyMap<number, TypeModel>;

  constructor(model: SchemaModel) {
    this.types = new Map(model.types.map((t) => [t.oid, t]));
  }

  /** The Row type of a value of type `oid` (without `| null`). */
  row(oid: number, depth = 0): string {
    const known = PARSED.get(oid);
    if (known) return known;
    const type = this.types.get(oid);
    if (!type || depth > 8) return 'string';
    // Postgres reports a domain's base type in RowDescription, so node-postgres parses that.
    if (type.kind === 'd') return this.row(type.base, depth + 1);
    if (type.kind === 'e') return literalUnion(type.labels ?? []);
    // Enum arrays, composites, ranges, arrays of them: no parser, the text as sent.
    return 'string';
  }

  /** The type a client may give when writing a value of type `oid`. */
  input(oid: number): string {
    const row = this.row(oid);
    const base = this.types.get(oid);
    const resolved = base?.kind === 'd' ? base.base : oid;
    // int8 and numeric are read as strings but may be written as numbers or bigints.
    if (resolved === 20 || resolved === 1700) return 'string | number | bigint';
    return widenForInput(row);
  }
}

function renderColumns(lines: string[], indent: string, fields: [string, string, boolean][]): void {
  for (const [name, type, optional] of fields)
    lines.push(`${indent}${key(name)}${optional ? '?' : ''}: ${type};`);
}

/** The module's text: a `Database` interface and one alias per enum. */
export function renderTypes(
  model: SchemaModel,
  header = 'Generated by pglite-gateway: do not edit.',
): string {
  const mapper = new TypeMapper(model);
  const schemas = [
    ...new Set([
      ...model.relations.map((r) => r.schema),
      ...model.types.filter((t) => t.kind === 'e' || (t.kind === 'c' && t.attributes)).map((t) => t.schema),
    ]),
  ].sort();
  const lines: string[] = [`// ${header}`, ''];
  lines.push('export interface Database {');
  for (const schema of schemas) {
    lines.push(`  ${key(schema)}: {`);
    // Code-point order: the same output whatever the locale.
    const relations = model.relations
      .filter((r) => r.schema === schema)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const kind of ['table', 'view'] as const) {
      lines.push(`    ${kind === 'table' ? 'Tables' : 'Views'}: {`);
      for (const rel of relations.filter((r) => r.kind === kind)) {
        lines.push(`      ${key(rel.name)}: {`);
        const nullable = (c: ColumnModel, t: string) => (c.nullable ? `${t} | null` : t);
        lines.push('        Row: {');
        renderColumns(
          lines,
          '          ',
          rel.columns.map((c) => [c.name, nullable(c, mapper.row(c.type)), false]),
        );
        lines.push('        };');
        if (kind === 'table') {
          for (const shape of ['Insert', 'Update'] as const) {
            lines.push(`        ${shape}: {`);
            renderColumns(
              lines,
              '          ',
              rel.columns.map((c) => {
                if (c.generated) return [c.name, 'never', true];
                const optional = shape === 'Update' || c.nullable || c.hasDefault || c.identity;
                return [c.name, nullable(c, mapper.input(c.type)), optional];
              }),
            );
            lines.push('        };');
          }
        }
        lines.push('      };');
      }
      lines.push('    };');
    }
    lines.push('    Enums: {');
    for (const t of model.types.filter((t) => t.schema === schema && t.kind === 'e'))
      lines.push(`      ${key(t.name)}: ${literalUnion(t.labels ?? [])};`);
    lines.push('    };');
    lines.push('    CompositeTypes: {');
    for (const t of model.types.filter((t) => t.schema === schema && t.kind === 'c' && t.attributes)) {
      lines.push(`      ${key(t.name)}: {`);
      renderColumns(
        lines,
        '        ',
        (t.attributes ?? []).map((a) => [a.name, `${mapper.row(a.type)} | null`, false]),
      );
      lines.push('      };');
    }
    lines.push('    };');
    lines.push('  };');
  }
  lines.push('}', '');
  // Shortcuts in the style of supabase's `Tables<'name'>` for the public schema.
  if (schemas.includes('public')) {
    lines.push(
      "export type Tables<T extends keyof Database['public']['Tables']> = Database['public']['Tables'][T]['Row'];",
      "export type TablesInsert<T extends keyof Database['public']['Tables']> = Database['public']['Tables'][T]['Insert'];",
      "export type TablesUpdate<T extends keyof Database['public']['Tables']> = Database['public']['Tables'][T]['Update'];",
      "export type Views<T extends keyof Database['public']['Views']> = Database['public']['Views'][T]['Row'];",
      "export type Enums<T extends keyof Database['public']['Enums']> = Database['public']['Enums'][T];",
      '',
    );
  }
  return lines.join('\n');
}
