import { leadingWords, statements, type Token } from './sql-lexer.js';

/**
 * What SET, RESET, DISCARD and set_config in a text change, as the lexer reads them: the
 * settings the pooler reads back (settings.ts) and those it puts back to what the client
 * connected with (startup-resets.ts). Pure.
 */

/**
 * Names the forms of SET and RESET with their own syntax stand for, as settingName reads them:
 * the settings they change (none for SET CONSTRAINTS; the seed is never read back), or
 * undefined for those not read by name (RESET ALL, SESSION AUTHORIZATION).
 */
const SPECIAL_FORMS: Readonly<Record<string, readonly string[] | undefined>> = {
  names: ['client_encoding'],
  schema: ['search_path'],
  xml: ['xmloption'],
  constraints: [],
  seed: [],
  characteristics: [
    'default_transaction_isolation',
    'default_transaction_read_only',
    'default_transaction_deferrable',
  ],
  all: undefined,
  authorization: undefined,
  session: undefined,
};

/**
 * Whether a text may change session settings (SET/RESET/DISCARD/set_config), and the custom
 * (dotted, lowercased) names it sets by name: Postgres lists none of those in pg_settings, so the
 * read-back must ask for each by name. A name given as a parameter of set_config is not seen.
 * `named` is every setting it changes, lowercased, when the text is only SET and RESET of names
 * (what a read-back by SHOW must ask for); undefined when that cannot be told from the text.
 */
export function settingsChangedBy(sql: string): { custom: string[]; named?: string[] } | undefined {
  if (!/set|discard/i.test(sql)) return undefined;
  let changes = false;
  const custom: string[] = [];
  let named: string[] | undefined = [];
  for (const statement of statements(sql)) {
    const [first, second, third] = leadingWords(statement, 3);
    const qualified = first === 'set' && setNameStart(statement) === 2;
    // SET [LOCAL | SESSION] TRANSACTION changes only transaction_* (never read back): a read-back
    // after it would be the transaction's first query, and a second one would then fail (25001).
    if (first === 'set' && (qualified ? third : second) === 'transaction') {
      if (!isAssign(statement[qualified ? 3 : 2])) continue;
    }
    if (first === 'set' || first === 'reset') {
      changes = true;
      const name = settingName(statement, qualified ? 2 : 1);
      // A SET LOCAL value ends with its transaction, which holds the session throughout: not
      // tracked for the next client, nor counted against the database's custom names.
      if (name?.text.includes('.') && !(qualified && second === 'local')) custom.push(name.text);
      const settings = name && (name.text in SPECIAL_FORMS ? SPECIAL_FORMS[name.text] : [name.text]);
      if (settings === undefined) named = undefined;
      else named?.push(...settings);
    } else if (first === 'discard') {
      changes = true;
      named = undefined;
    }
    statement.forEach((t, i) => {
      if (t.kind !== 'word' || t.text !== 'set_config') return;
      changes = true;
      named = undefined;
      const arg = statement[i + 2];
      if (statement[i + 1]?.text === '(' && arg?.kind === 'string' && arg.text.includes('.'))
        custom.push(arg.text.toLowerCase());
    });
  }
  return changes ? { custom, ...(named ? { named } : {}) } : undefined;
}

/** Whether a text goes back to a savepoint (`ROLLBACK [WORK | TRANSACTION] TO`), undoing SETs since. */
export function rollsBackToSavepoint(sql: string): boolean {
  if (!/rollback/i.test(sql)) return false;
  return statements(sql).some((statement) => {
    const [first, second, third] = leadingWords(statement, 3);
    return (
      first === 'rollback' &&
      (second === 'to' || ((second === 'work' || second === 'transaction') && third === 'to'))
    );
  });
}

/**
 * Settings a text puts back to their session default: `RESET name`, `RESET ALL`, and
 * `SET [SESSION] name TO|= DEFAULT` (lowercased names), and for the rest of the transaction
 * `SET LOCAL name TO DEFAULT` (`local`). In Postgres that default includes what
 * the client connected with (startup packet, `options=-c`); the shared session's does not, so
 * the pooler sets those again (startup-resets.ts).
 */
export function resetSettings(sql: string): { all: boolean; names: string[]; local?: string[] } | undefined {
  if (!/reset|default/i.test(sql)) return undefined;
  let all = false;
  const names: string[] = [];
  const local: string[] = [];
  for (const statement of statements(sql)) {
    const [first, second] = leadingWords(statement, 2);
    if (first === 'reset') {
      const name = settingName(statement, 1);
      if (name?.end === statement.length) {
        if (name.text === 'all') all = true;
        else names.push(name.text);
      }
    } else if (first === 'set') {
      const start = setNameStart(statement);
      const name = settingName(statement, start);
      if (!name) continue;
      // SET TIME ZONE takes its value without TO or =.
      const at = isAssign(statement[name.end]) ? name.end + 1 : name.zone ? name.end : -1;
      const value = statement[at];
      if (value?.kind === 'word' && value.text === 'default' && statement.length === at + 1)
        (start === 2 && second === 'local' ? local : names).push(name.text);
    }
  }
  if (!all && names.length === 0 && local.length === 0) return undefined;
  return { all, names, ...(local.length > 0 ? { local } : {}) };
}

/**
 * Where a SET's setting name starts: after LOCAL or SESSION, unless that word is the name itself
 * (`SET local = 1` is no setting, but Postgres says so) or its first part (`SET local.tenant`).
 */
export function setNameStart(statement: readonly Token[]): 1 | 2 {
  const [, second] = leadingWords(statement, 2);
  if (second !== 'session' && second !== 'local') return 1;
  const next = statement[2];
  return isAssign(next) || (next?.kind === 'symbol' && next.text === '.') ? 1 : 2;
}

export const isAssign = (t: Token | undefined): boolean =>
  (t?.kind === 'word' && t.text === 'to') || (t?.kind === 'symbol' && t.text === '=');

/** A setting's name from `start` (`name`, `"Name"`, `ext.name`), lowercased, and where it ends. */
function settingName(
  statement: readonly Token[],
  start: number,
): { text: string; end: number; zone?: true } | undefined {
  const parts: string[] = [];
  let i = start;
  for (;;) {
    const t = statement[i];
    if (t?.kind !== 'word' && t?.kind !== 'ident') return undefined;
    parts.push(t.text.toLowerCase());
    i++;
    const dot = statement[i];
    if (dot?.kind !== 'symbol' || dot.text !== '.') break;
    i++;
  }
  // RESET TIME ZONE is timezone.
  if (parts.length === 1 && parts[0] === 'time' && statement[i]?.kind === 'word') {
    const zone = statement[i] as Token;
    if (zone.text === 'zone') return { text: 'timezone', end: i + 1, zone: true };
  }
  return { text: parts.join('.'), end: i };
}
