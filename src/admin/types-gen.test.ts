import { describe, expect, it } from 'vitest';
import { renderTypes, type SchemaModel, TypeMapper } from './types-gen.js';

const col = (name: string, type: number, extra: Partial<SchemaModel['relations'][0]['columns'][0]> = {}) => ({
  name,
  type,
  nullable: false,
  hasDefault: false,
  identity: false,
  generated: false,
  ...extra,
});

const MODEL: SchemaModel = {
  relations: [
    {
      schema: 'public',
      name: 'users',
      kind: 'table',
      columns: [
        col('id', 20, { identity: true }),
        col('mood', 90001, { hasDefault: true }),
        col('moods', 90002, { nullable: true }),
        col('score', 90003),
        col('total', 1700, { generated: true, nullable: true }),
      ],
    },
    { schema: 'app', name: 'v', kind: 'view', columns: [col('n', 1700, { nullable: true })] },
  ],
  types: [
    { oid: 90001, schema: 'public', name: 'mood', kind: 'e', elem: 0, base: 0, labels: ['a', "it's"] },
    { oid: 90002, schema: 'public', name: '_mood', kind: 'b', elem: 90001, base: 0 },
    { oid: 90003, schema: 'public', name: 'score', kind: 'd', elem: 0, base: 1700 },
  ],
};

describe('TypeMapper', () => {
  const m = new TypeMapper(MODEL);
  it('maps types as node-postgres parses them', () => {
    expect(m.row(20)).toBe('string');
    expect(m.row(1700)).toBe('string');
    expect(m.row(23)).toBe('number');
    expect(m.row(1016)).toBe('string[]');
    expect(m.row(1007)).toBe('number[]');
    expect(m.row(1184)).toBe('Date');
    expect(m.row(3802)).toBe('unknown');
    expect(m.row(17)).toBe('Buffer');
    // Enums are unions; their arrays have no parser in node-postgres: the text.
    expect(m.row(90001)).toBe('"a" | "it\'s"');
    expect(m.row(90002)).toBe('string');
    // Domains are their base type (Postgres reports the base type's OID).
    expect(m.row(90003)).toBe('string');
    expect(m.row(424242)).toBe('string');
  });
  it('widens what may be written', () => {
    expect(m.input(20)).toBe('string | number | bigint');
    expect(m.input(90003)).toBe('string | number | bigint');
    expect(m.input(1184)).toBe('Date | string');
  });
});

describe('renderTypes', () => {
  const text = renderTypes(MODEL);
  it('gives tables Row, Insert and Update, and views Row only', () => {
    expect(text).toContain(
      '  app: {\n    Tables: {\n    };\n    Views: {\n      v: {\n        Row: {\n          n: string | null;',
    );
    expect(text).not.toMatch(/v: \{\n\s+Row: \{[^}]*\};\n\s+Insert/);
    expect(text).toMatch(/Insert: \{\n\s+id\?: string \| number \| bigint;\n\s+mood\?: "a" \| "it's";/);
    expect(text).toContain('moods?: string | null;');
    expect(text).toContain('score: string | number | bigint;');
    expect(text).toContain('total?: never;');
    expect(text).toMatch(/Update: \{\n\s+id\?: string \| number \| bigint;\n\s+mood\?:/);
    expect(text).toContain('      mood: "a" | "it\'s";');
  });
  it('is the same for the same model, whatever the order of its parts', () => {
    const shuffled = { ...MODEL, relations: [...MODEL.relations].reverse() };
    expect(renderTypes(shuffled)).toBe(text);
  });
});
