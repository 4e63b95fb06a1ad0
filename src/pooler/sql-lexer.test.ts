import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasWords, identifierName, leadingWords, statements, tokens } from './sql-lexer.js';

const words = (sql: string) => [...tokens(sql)].filter((t) => t.kind === 'word').map((t) => t.text);

describe('sql lexer', () => {
  it('never takes keywords inside comments, literals or quoted identifiers for keywords', () => {
    expect(words("select 'discard all' -- discard all\n/* discard /* nested */ all */")).toEqual(['select']);
    expect(words(`select "discard all", E'it\\'s discard all', $$discard all$$, $x$ $$ discard $x$`)).toEqual(
      ['select'],
    );
    expect(words("select U&'d\\0061ta', B'1010', X'ff', N'n'")).toEqual(['select']);
  });

  it('splits statements at top-level semicolons only', () => {
    const parsed = statements("begin; select ';'; copy t from stdin; select $$;$$ ;;");
    expect(parsed.map((s) => leadingWords(s, 2))).toEqual([['begin'], ['select'], ['copy', 't'], ['select']]);
    expect(hasWords(parsed[2] ?? [], 'from', 'stdin')).toBe(true);
  });

  it('ends a line comment where Postgres does (\\n or \\r) and takes \\v for whitespace', () => {
    // Each of these is two statements to Postgres; a guard that saw one would miss the second.
    for (const sql of [
      'select 1; -- c\rdeallocate all',
      'select 1 -- c\r;deallocate all',
      'select 1;\vdeallocate all',
    ]) {
      expect(statements(sql).map((s) => leadingWords(s, 2))).toEqual([['select'], ['deallocate', 'all']]);
    }
    expect(words('select -- deallocate\r\nall')).toEqual(['select', 'all']);
  });

  it('finds a statement after any mix of whitespace and comments', () => {
    const gap = fc.constantFrom(
      ' ',
      '\t',
      '\n',
      '\r',
      '\f',
      '\v',
      '-- x\r',
      '-- x\n',
      '/* x */',
      '/* /* x */ */',
    );
    fc.assert(
      fc.property(fc.array(gap, { maxLength: 6 }), (gaps) => {
        const parsed = statements(`select 1;${gaps.join('')}discard all`);
        expect(parsed.map((s) => leadingWords(s, 2))).toEqual([['select'], ['discard', 'all']]);
      }),
      { numRuns: 300 },
    );
  });

  it('names identifiers as Postgres stores them: ASCII folded, U& decoded, 63 bytes', () => {
    const name = (sql: string) => {
      const all = [...tokens(sql)];
      return identifierName(all[0], all.slice(1));
    };
    expect(name('Chan')).toBe('chan');
    expect(name('Éclair')).toBe('Éclair'); // only ASCII letters fold in UTF8
    expect(name('"Chan"')).toBe('Chan');
    expect(name('U&"d\\0061t\\+000061"')).toBe('data');
    expect(name(`U&"d!0061t!!" UESCAPE '!'`)).toBe('dat!');
    expect(name('U&"bad\\00"')).toBeUndefined();
    expect(name('x'.repeat(70))).toBe('x'.repeat(63));
    // Cut at a character boundary: 31 two-byte letters are 62 bytes, a 32nd would pass 63.
    expect(name(`"${'é'.repeat(40)}"`)).toBe('é'.repeat(31));
    expect(name("'string'")).toBeUndefined();
  });

  it('keeps $1 parameters and operators as symbols', () => {
    expect([...tokens('select $1 + $2')].map((t) => t.text)).toEqual(['select', '$1', '+', '$2']);
  });

  it('ends unterminated literals and comments at the end of the text', () => {
    expect(words("select 'open")).toEqual(['select']);
    expect(words('select /* open')).toEqual(['select']);
    expect(words('select $tag$ open')).toEqual(['select']);
  });

  it('terminates on any input', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (sql) => {
        const all = [...tokens(sql)];
        expect(all.length).toBeLessThanOrEqual(sql.length);
      }),
      { numRuns: 500 },
    );
  });
});
