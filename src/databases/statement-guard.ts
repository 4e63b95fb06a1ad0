/**
 * PGlite dies for good (exit(1), then a spinning hang) when it starts COPY FROM STDIN without the
 * data in the same call. So the gateway must recognise such statements before sending them.
 */

export type CopyFromStdin = 'none' | 'single' | 'embedded';

/** Removes comments and the contents of quoted literals/identifiers, keeping the structure. */
export function skeleton(sql: string): string {
  let out = '';
  let i = 0;
  while (i < sql.length) {
    const ch = sql[i] as string;
    const next = sql[i + 1];
    if (ch === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? sql.length : end;
      out += ' ';
    } else if (ch === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < sql.length && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else {
          i++;
        }
      }
      out += ' ';
    } else if (ch === "'" || ch === '"') {
      i++;
      while (i < sql.length) {
        if (sql[i] === ch && sql[i + 1] === ch) i += 2;
        else if (sql[i] === ch) break;
        else i++;
      }
      i++;
      out += `${ch}${ch}`;
    } else if (ch === '$') {
      const tag = /^\$[A-Za-z_]*\$/.exec(sql.slice(i))?.[0];
      if (!tag) {
        out += ch;
        i++;
        continue;
      }
      const end = sql.indexOf(tag, i + tag.length);
      i = end < 0 ? sql.length : end + tag.length;
      out += "''";
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** 'single': the text is exactly one COPY ... FROM STDIN; 'embedded': it hides one among others. */
export function detectCopyFromStdin(sql: string): CopyFromStdin {
  if (!/stdin/i.test(sql)) return 'none';
  const text = skeleton(sql)
    .trim()
    .replace(/[\s;]+$/, '');
  if (!/\bfrom\s+stdin\b/i.test(text)) return 'none';
  if (/^copy\b[^;]*\bfrom\s+stdin\b[^;]*$/is.test(text)) return 'single';
  return 'embedded';
}

/**
 * Statements that fail inside Postgres with a message naming the limitation. Failing there (not
 * answering for the backend) keeps the transaction state the client sees and the real one equal.
 */
export const COPY_REFUSAL_SQL = 'SELECT pg_catalog."COPY FROM STDIN needs a lone simple Query"()';
export const IDENTITY_REFUSAL_SQL = 'SELECT pg_catalog."read-only database: identity is fixed"()';

/**
 * In a read-only database the session runs under a restricted session authorization; these are
 * the statements that could change it back. Matched on the raw text, literals included, so they
 * cannot hide in dynamic SQL either (which read-only sessions cannot run anyway).
 */
const IDENTITY_CHANGE = /session[\s_]+authorization|\bdiscard\s+all\b/i;

export type StatementVerdict = { kind: 'pass' } | { kind: 'copy-in' } | { kind: 'refuse'; sql: string };

/** Decides how a client's SQL text may reach the database. */
export function judgeStatement(sql: string, opts: { readOnly: boolean }): StatementVerdict {
  if (opts.readOnly && IDENTITY_CHANGE.test(sql)) return { kind: 'refuse', sql: IDENTITY_REFUSAL_SQL };
  const copy = detectCopyFromStdin(sql);
  if (copy === 'embedded') return { kind: 'refuse', sql: COPY_REFUSAL_SQL };
  return copy === 'single' ? { kind: 'copy-in' } : { kind: 'pass' };
}

/** Whether a statement may change session settings (SET/RESET/DISCARD/set_config). */
export function mayChangeSettings(sql: string): boolean {
  if (!/set|discard/i.test(sql)) return false;
  return /(?:^|;)\s*(?:set|reset|discard)\b|set_config/i.test(skeleton(sql));
}
