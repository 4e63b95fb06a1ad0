/**
 * A small SQL lexer for statement inspection: it knows Postgres' comments (nested block comments
 * included), string literals ('', E'' with backslash escapes, U&'', B'', X''), quoted
 * identifiers and dollar quoting, so a keyword inside any of them is never taken for a keyword.
 * It does not parse: it splits the text into statements at top-level semicolons and gives each
 * statement's tokens. Pure; no I/O.
 */

export type Token =
  /** An unquoted word (keyword or identifier), lowercased. */
  | { kind: 'word'; text: string }
  /**
   * A quoted identifier, as written inside the quotes (doubled quotes undone). `unicode`: written
   * U&"...", its escapes not decoded (see unicodeIdentifier).
   */
  | { kind: 'ident'; text: string; unicode?: true }
  /** A string constant's contents (escapes left as written). */
  | { kind: 'string'; text: string }
  | { kind: 'symbol'; text: string };

const WORD_START = /[A-Za-z_\u0080-\uffff]/;
const WORD_PART = /[A-Za-z0-9_$\u0080-\uffff]/;
const DOLLAR_TAG = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;

/** Statements of `sql` (split at top-level `;`), each as its tokens; empty statements are dropped. */
export function statements(sql: string): Token[][] {
  const out: Token[][] = [];
  let current: Token[] = [];
  for (const token of tokens(sql)) {
    if (token.kind === 'symbol' && token.text === ';') {
      if (current.length > 0) out.push(current);
      current = [];
    } else {
      current.push(token);
    }
  }
  if (current.length > 0) out.push(current);
  return out;
}

export function* tokens(sql: string): Generator<Token> {
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const ch = sql[i] as string;
    const next = sql[i + 1];
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f' || ch === '\v') {
      // Postgres' scanner (scan.l, `space`) takes exactly these as whitespace, \v included.
      i++;
    } else if (ch === '-' && next === '-') {
      // A line comment ends at \n or \r (scan.l: `non_newline [^\n\r]`): ending it only at \n
      // would hide from every guard a statement Postgres runs after a lone \r.
      i = lineEnd(sql, i + 2);
    } else if (ch === '/' && next === '*') {
      i = skipBlockComment(sql, i);
    } else if (ch === "'") {
      const { text, end } = quoted(sql, i, "'", false);
      yield { kind: 'string', text };
      i = end;
    } else if ((ch === 'e' || ch === 'E') && next === "'") {
      const { text, end } = quoted(sql, i + 1, "'", true);
      yield { kind: 'string', text };
      i = end;
    } else if ((ch === 'u' || ch === 'U') && next === '&' && (sql[i + 2] === "'" || sql[i + 2] === '"')) {
      const quote = sql[i + 2] as string;
      const { text, end } = quoted(sql, i + 2, quote, false);
      yield quote === "'" ? { kind: 'string', text } : { kind: 'ident', text, unicode: true };
      i = end;
    } else if (
      (ch === 'b' || ch === 'B' || ch === 'x' || ch === 'X' || ch === 'n' || ch === 'N') &&
      next === "'"
    ) {
      const { text, end } = quoted(sql, i + 1, "'", false);
      yield { kind: 'string', text };
      i = end;
    } else if (ch === '"') {
      const { text, end } = quoted(sql, i, '"', false);
      yield { kind: 'ident', text };
      i = end;
    } else if (ch === '$') {
      const tag = DOLLAR_TAG.exec(sql.slice(i, i + 70))?.[0];
      if (tag) {
        const close = sql.indexOf(tag, i + tag.length);
        const end = close < 0 ? n : close;
        yield { kind: 'string', text: sql.slice(i + tag.length, end) };
        i = close < 0 ? n : close + tag.length;
      } else {
        // $1 parameters and the like.
        let j = i + 1;
        while (j < n && /[0-9]/.test(sql[j] as string)) j++;
        yield { kind: 'symbol', text: sql.slice(i, Math.max(j, i + 1)) };
        i = Math.max(j, i + 1);
      }
    } else if (WORD_START.test(ch)) {
      let j = i + 1;
      while (j < n && WORD_PART.test(sql[j] as string)) j++;
      // Postgres folds only ASCII letters in a multibyte encoding (downcase_identifier).
      yield { kind: 'word', text: sql.slice(i, j).replace(/[A-Z]/g, (c) => c.toLowerCase()) };
      i = j;
    } else {
      yield { kind: 'symbol', text: ch };
      i++;
    }
  }
}

/** The index of the first \n or \r at or after `from` (the length when there is none). */
function lineEnd(sql: string, from: number): number {
  for (let i = from; i < sql.length; i++) if (sql[i] === '\n' || sql[i] === '\r') return i;
  return sql.length;
}

function skipBlockComment(sql: string, start: number): number {
  let depth = 1;
  let i = start + 2;
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
  return i;
}

/** A quoted run starting at `start` (the opening quote); doubled quotes stand for one. */
function quoted(
  sql: string,
  start: number,
  quote: string,
  backslashes: boolean,
): { text: string; end: number } {
  let text = '';
  let i = start + 1;
  while (i < sql.length) {
    const ch = sql[i] as string;
    if (backslashes && ch === '\\') {
      text += sql.slice(i, i + 2);
      i += 2;
    } else if (ch === quote && sql[i + 1] === quote) {
      text += quote;
      i += 2;
    } else if (ch === quote) {
      return { text, end: i + 1 };
    } else {
      text += ch;
      i++;
    }
  }
  return { text, end: sql.length };
}

/**
 * The identifier a token names, as Postgres stores it: U&"..." escapes decoded (`\XXXX`,
 * `\+XXXXXX`, or another escape character given by UESCAPE in `next`), and truncated to 63
 * bytes (NAMEDATALEN - 1) at a character boundary. Undefined for anything that is no identifier
 * or an escape Postgres would refuse.
 */
export function identifierName(token: Token | undefined, next: readonly Token[] = []): string | undefined {
  if (!token || (token.kind !== 'word' && token.kind !== 'ident')) return undefined;
  let name = token.text;
  if (token.kind === 'ident' && token.unicode) {
    const [uescape, escapeChar] = next;
    const custom = uescape?.kind === 'word' && uescape.text === 'uescape' && escapeChar?.kind === 'string';
    const decoded = decodeUnicodeEscapes(name, custom ? escapeChar.text : '\\');
    if (decoded === undefined) return undefined;
    name = decoded;
  }
  return truncateName(name);
}

function decodeUnicodeEscapes(text: string, esc: string): string | undefined {
  if (esc.length !== 1 || /[0-9a-fA-F+'"\s]/.test(esc)) return undefined;
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch !== esc) {
      out += ch;
    } else if (text[i + 1] === esc) {
      out += esc;
      i++;
    } else {
      const long = text[i + 1] === '+';
      const hex = text.slice(long ? i + 2 : i + 1, long ? i + 8 : i + 5);
      if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== (long ? 6 : 4)) return undefined;
      const code = Number.parseInt(hex, 16);
      if (code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return undefined;
      out += String.fromCodePoint(code);
      i += long ? 7 : 4;
    }
  }
  return out;
}

/** Postgres' identifier limit: NAMEDATALEN - 1 bytes, cut at a character boundary. */
const MAX_NAME_BYTES = 63;

function truncateName(name: string): string {
  if (Buffer.byteLength(name) <= MAX_NAME_BYTES) return name;
  let out = '';
  let bytes = 0;
  for (const ch of name) {
    bytes += Buffer.byteLength(ch);
    if (bytes > MAX_NAME_BYTES) break;
    out += ch;
  }
  return out;
}

/** Whether `words` appear as consecutive word tokens anywhere in `statement`. */
export function hasWords(statement: readonly Token[], ...words: string[]): boolean {
  outer: for (let i = 0; i + words.length <= statement.length; i++) {
    for (let k = 0; k < words.length; k++) {
      const t = statement[i + k] as Token;
      if (t.kind !== 'word' || t.text !== words[k]) continue outer;
    }
    return true;
  }
  return false;
}

/** The first `count` word tokens of a statement (stopping at anything else). */
export function leadingWords(statement: readonly Token[], count: number): string[] {
  const out: string[] = [];
  for (const t of statement) {
    if (t.kind !== 'word' || out.length >= count) break;
    out.push(t.text);
  }
  return out;
}
