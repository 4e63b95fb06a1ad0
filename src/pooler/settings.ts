import { parameterStatus } from '../wire/protocol.js';
import { durationMs, ident, literal, readSettingsSql, valueSql } from './setting-values.js';
import { StartupResets } from './startup-resets.js';

/**
 * Session settings under multiplexing. Each client has the settings it asked for (startup
 * packet, options -c, later SET); the shared Postgres session is switched to them before the
 * client's unit runs, and read back after a unit that may have changed them.
 */

/** Settings reported to clients (ParameterStatus) that a client may change. */
export const TRACKED_SETTINGS = [
  'application_name',
  'client_encoding',
  'DateStyle',
  'IntervalStyle',
  'TimeZone',
  'standard_conforming_strings',
  'search_path',
  // A read-only database's baseline sets it: every client has it unless it changes it itself.
  'default_transaction_read_only',
] as const;

/**
 * SQL that moves the session from `current` to `wanted`: SET for differing values, RESET for
 * names someone set that this client has no value for. Undefined when nothing differs.
 */
export function switchSettingsSql(
  current: ReadonlyMap<string, string>,
  wanted: ReadonlyMap<string, string>,
  defaults: ReadonlyMap<string, string>,
): string | undefined {
  const statements: string[] = [];
  const names = new Set([...current.keys(), ...wanted.keys()]);
  for (const name of names) {
    const want = wanted.get(name) ?? defaults.get(name);
    if (want === undefined) statements.push(`RESET ${ident(name)}`);
    else if (current.get(name) !== want) statements.push(`SET ${ident(name)} TO ${valueSql(name, want)}`);
  }
  return statements.length > 0 ? statements.join('; ') : undefined;
}

/**
 * Identity settings, read back after every settings change and switched first. A read-only
 * database's session authorization is fixed by its baseline (and refused to clients), so only
 * the role is tracked there.
 */
const IDENTITY_SETTINGS = ['session_authorization', 'role'] as const;
/** The value current_setting('role') shows when no role is set. */
const NO_ROLE = 'none';

/** The parts of a database the settings of its clients are tracked against. */
interface SharedSettings {
  settings: Map<string, string>;
  readonly defaults: ReadonlyMap<string, string>;
  readonly reported: ReadonlySet<string>;
  readonly readOnly?: boolean;
  /** The session authorization is fixed by a baseline (writer databases too): only the role is tracked. */
  readonly fixedIdentity?: boolean;
  /** Values of the reported parameters at start (session_authorization's default). */
  readonly parameters?: Readonly<Record<string, string>>;
  /** Custom (dotted) names clients of the session set: read back by name (see settingsChangedBy). */
  readonly customNames?: Set<string>;
}

/** Custom names tracked per session at most: each one costs every read-back a column. */
export const MAX_CUSTOM_NAMES = 200;
/** Longer custom names are not tracked (they would weigh on every read-back). */
const MAX_CUSTOM_NAME_LENGTH = 256;

/** A custom setting reads '' once any client used its name, and NULL before: both mean unset. */
const isCustom = (db: SharedSettings, name: string) => name.includes('.') && !db.defaults.has(name);

const identityNames = (db: SharedSettings): string[] =>
  db.readOnly || db.fixedIdentity ? ['role'] : [...IDENTITY_SETTINGS];

/** The value an identity setting has when nobody changed it. */
/** PGlite's session runs as its bootstrap superuser, whose session_authorization reads as ''. */
const BOOTSTRAP_USER = 'postgres';

const identityDefault = (db: SharedSettings, name: string): string =>
  name === 'role' ? NO_ROLE : db.parameters?.[name] || BOOTSTRAP_USER;

/**
 * Back to the identity the session started with. PGlite's RESET SESSION AUTHORIZATION does not
 * go back to its superuser (the setting's boot value is empty), so it is set by name; setting
 * it is allowed whatever the current identity, as the authenticated user is a superuser.
 */
export function startingIdentitySql(db: SharedSettings): string {
  const names = identityNames(db);
  return names.includes('session_authorization')
    ? `RESET ROLE; SET SESSION AUTHORIZATION ${ident(identityDefault(db, 'session_authorization'))}`
    : 'RESET ROLE';
}

/**
 * SQL of one row: the current value of each name, then a JSON object of every other setting
 * changed in this session (SET), so that settings the gateway does not know by name (say
 * statement_timeout or work_mem) follow their client too instead of leaking to the next one.
 */
export function readBackSql(names: readonly string[]): string {
  const known = names.map((n) => literal(n.toLowerCase())).join(', ');
  const others = `(SELECT COALESCE(pg_catalog.json_object_agg(name, setting), '{}') FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT LIKE 'transaction\\_%' AND name <> 'seed' AND pg_catalog.lower(name) <> ALL (ARRAY[${known}]::text[]))`;
  return `${readSettingsSql(names)}, ${others}`;
}

/**
 * The names a read-back by SHOW asks for: `names` and then `more`, each once (setting names are
 * case-insensitive). Not the session user, which SHOW reads as '' in PGlite (left to the read-back
 * at the end of the transaction), nor the seed, which has no value to read.
 */
function showNames(names: readonly string[], more: readonly string[]): string[] {
  const seen = new Set<string>(['session_authorization', 'seed']);
  const shown: string[] = [];
  for (const name of [...names, ...more]) {
    const key = name.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    shown.push(name);
  }
  return shown;
}

/**
 * One client's settings: what it asked for, and whether a statement since the last read-back may
 * have changed them (inside a transaction they are read again when it ends: ROLLBACK undoes SET).
 */
export class ClientSettings {
  private readonly wanted: Map<string, string>;
  /** What the client connected with (startup packet, options -c): DISCARD ALL goes back to it. */
  private readonly initial: ReadonlyMap<string, string>;
  /** The values before a DISCARD ALL, so the read-back after it reports what it changed. */
  private beforeReset: ReadonlyMap<string, string> | undefined;
  /** A statement may have changed settings: read them back before the client hears its answer. */
  private dirty = false;
  /**
   * The session was switched to this client's settings: read them back to normalise, but only
   * outside a transaction, so that the read-back is never the first statement of the client's
   * transaction (SET TRANSACTION ISOLATION LEVEL must come before any query).
   */
  private switchedIn: boolean;
  private recheck = false;
  /** Custom names this client's statements set since the last read-back. */
  private readonly customSeen: string[] = [];
  private changed = false;
  /** The settings as last read back outside a transaction: what a rollback goes back to. */
  private outside: ReadonlyMap<string, string>;

  constructor(initial: Readonly<Record<string, string>>) {
    this.wanted = new Map(Object.entries(initial));
    this.initial = new Map(this.wanted);
    this.outside = this.initial;
    this.resets = new StartupResets(this.initial, (name, value, local) =>
      (IDENTITY_SETTINGS as readonly string[]).includes(name.toLowerCase())
        ? undefined
        : `SET ${local ? 'LOCAL ' : ''}${ident(name)} TO ${valueSql(name, value)}`,
    );
    // A client that asked for nothing sees the database's defaults, which are known: no read-back
    // before its first answer (a one-shot HTTP query would otherwise pay a second round trip).
    this.switchedIn = this.wanted.size > 0;
  }

  /**
   * SQL that gives the shared session this client's settings, if any differ. A restricted identity
   * (SET ROLE, SET SESSION AUTHORIZATION) may not be allowed to set or reset the other settings
   * (superuser-only ones such as log_min_messages), so the session goes back to its starting
   * identity first, the other settings follow, and this client's identity comes last, in full:
   * SET SESSION AUTHORIZATION clears the role, so the role is always set after it.
   */
  switchSql(db: SharedSettings): string | undefined {
    const identity = identityNames(db);
    const identityOf = (m: ReadonlyMap<string, string>) =>
      identity.map((n) => [n, m.get(n) ?? identityDefault(db, n)] as const);
    const current = identityOf(db.settings);
    const wanted = identityOf(this.wanted);
    const atStart = current.every(([n, v]) => v === identityDefault(db, n));
    const identityDiffers = current.some(([, v], i) => v !== wanted[i]?.[1]);
    const pick = (m: ReadonlyMap<string, string>) => new Map([...m].filter(([k]) => !identity.includes(k)));
    const rest = switchSettingsSql(pick(db.settings), pick(this.wanted), db.defaults);
    const leave = !atStart && (identityDiffers || rest !== undefined);
    const statements: string[] = [];
    if (leave) statements.push(startingIdentitySql(db));
    if (rest) statements.push(rest);
    if (leave || identityDiffers)
      for (const [name, value] of wanted)
        if (value !== identityDefault(db, name)) statements.push(`SET ${ident(name)} TO ${literal(value)}`);
    return statements.length > 0 ? statements.join('; ') : undefined;
  }

  /**
   * The statement_timeout this client set (startup options, SET, SET LOCAL as last read back), in
   * ms; undefined when none or 0. PGlite has no timers of its own, so the pooler enforces it.
   */
  statementTimeoutMs(): number | undefined {
    const value = this.value('statement_timeout');
    // Asked before every unit: the value is parsed again only when it changed.
    if (value !== this.timeout.text) {
      const ms = value === undefined ? undefined : durationMs(value);
      this.timeout = { text: value, ms: ms !== undefined && ms > 0 ? ms : undefined };
    }
    return this.timeout.ms;
  }

  private timeout: { text: string | undefined; ms: number | undefined } = { text: undefined, ms: undefined };

  /** What the client has for a setting, its name matched case-insensitively as Postgres does. */
  value(name: string): string | undefined {
    const exact = this.wanted.get(name);
    if (exact !== undefined) return exact;
    for (const [k, v] of this.wanted) if (k.toLowerCase() === name) return v;
    return undefined;
  }

  /** Whether a statement of this client ever changed settings (its departure resets the session). */
  get everChanged(): boolean {
    return this.changed;
  }

  /** After switchSql ran: the session now has this client's settings (read back to normalise). */
  switched(db: SharedSettings): void {
    db.settings = new Map(db.defaults);
    for (const [k, v] of this.wanted) db.settings.set(k, v);
    this.switchedIn = true;
  }

  /**
   * The client went back to a savepoint: a SET since is undone. Read back if its transaction
   * changed settings (its SHOW read-back tracks every name changed in it: the fresh case).
   */
  noteRollbackTo(): void {
    if (this.recheck) this.dirty = true;
  }

  /** A statement ran: `change` is what settingsChangedBy found in it. */
  noteStatement(change: { custom: readonly string[]; named?: readonly string[] } | undefined): void {
    if (!change) return;
    this.dirty = true;
    this.changed = true;
    this.customSeen.push(...change.custom);
    if (change.named) this.namedSeen?.push(...change.named);
    else this.namedSeen = undefined;
  }

  /** Every setting statements since the last read-back changed, if the texts tell (settingsChangedBy). */
  private namedSeen: string[] | undefined = [];

  /** RESETs of what the client connected with, to be set again (startup-resets.ts). */
  readonly resets: StartupResets;

  /** DISCARD ALL: back to what the client connected with. */
  reset(): void {
    this.beforeReset = new Map(this.wanted);
    this.wanted.clear();
    for (const [k, v] of this.initial) this.wanted.set(k, v);
    this.others.clear();
    this.dirty = true;
    this.namedSeen = undefined;
  }

  due(status: 'I' | 'T' | 'E'): boolean {
    return this.dirty || ((this.recheck || this.switchedIn) && status === 'I');
  }

  /**
   * The names to read back and the query doing it. With `snapshotFree` (a transaction that has
   * taken no snapshot) also `shown`, the names to read by SHOW instead, when the statements since
   * the last read-back tell every setting they changed: the tracked names, this client's other
   * settings, and those.
   */
  readBack(
    db: SharedSettings,
    status: 'I' | 'T' | 'E',
    snapshotFree = false,
  ): { names: string[]; sql: string; untracked?: string; shown?: string[] } {
    const seen = this.namedSeen;
    this.namedSeen = [];
    this.dirty = false;
    this.switchedIn = false;
    this.recheck = status !== 'I';
    const identity = identityNames(db);
    const names = [...new Set([...identity, ...db.defaults.keys(), ...this.wanted.keys()])].filter(
      (n) => identity.includes(n) || db.defaults.has(n) || !this.others.has(n),
    );
    let untracked: string | undefined;
    if (db.customNames) {
      for (const name of this.customSeen)
        if (db.customNames.has(name)) continue;
        else if (db.customNames.size < MAX_CUSTOM_NAMES && name.length <= MAX_CUSTOM_NAME_LENGTH)
          db.customNames.add(name);
        else untracked = name.slice(0, 100);
      const known = new Set(names.map((n) => n.toLowerCase()));
      // One listed in pg_settings (an extension's) is read back with the others already.
      for (const name of db.customNames) if (!known.has(name) && !this.others.has(name)) names.push(name);
    }
    this.customSeen.length = 0;
    // Custom names other clients set may not be defined in the session (after a restart, say),
    // and SHOW fails on those: they are read with the rest when the transaction ends.
    const own = names.filter((n) => !isCustom(db, n) || this.wanted.has(n));
    const shown = snapshotFree && seen ? showNames(own, [...this.others, ...seen]) : undefined;
    return {
      names,
      sql: readBackSql(names),
      ...(untracked ? { untracked } : {}),
      ...(shown ? { shown } : {}),
    };
  }

  /**
   * Records values read by SHOW (`shown` from readBack): the tracked names as apply does, the
   * others as this client's until the read-back at the end of the transaction reads them all.
   */
  applyShown(db: SharedSettings, names: string[], shown: string[], values: (string | null)[]): Buffer[] {
    const byName = new Map(shown.map((name, i) => [name, values[i] ?? null]));
    const reports = this.apply(
      db,
      names,
      names.map((name) => byName.get(name) ?? null),
    );
    const tracked = new Set(names);
    for (const [name, value] of byName) {
      if (tracked.has(name) || value === null) continue;
      this.others.add(name);
      this.wanted.set(name, value);
      db.settings.set(name, value);
    }
    return reports;
  }

  /** Records read-back values; returns ParameterStatus messages for reported values that changed. */
  apply(db: SharedSettings, names: string[], values: (string | null)[]): Buffer[] {
    const reports: Buffer[] = [];
    const identity = identityNames(db);
    const previous = this.beforeReset ?? this.wanted;
    this.beforeReset = undefined;
    names.forEach((name, i) => {
      let value = values[i];
      if (value === null || value === undefined) return;
      if (identity.includes(name)) {
        const unchanged = identityDefault(db, name);
        if (value === '') value = unchanged ?? value;
        const before = previous.get(name) ?? unchanged;
        if (value === unchanged) {
          this.wanted.delete(name);
          db.settings.delete(name);
        } else {
          this.wanted.set(name, value);
          db.settings.set(name, value);
        }
        if (before !== value && db.reported.has(name)) reports.push(parameterStatus(name, value));
        return;
      }
      if (value === '' && isCustom(db, name)) {
        this.wanted.delete(name);
        db.settings.delete(name);
        return;
      }
      const before = previous.get(name) ?? db.defaults.get(name);
      db.settings.set(name, value);
      if (value !== db.defaults.get(name) || this.wanted.has(name)) this.wanted.set(name, value);
      if (before !== value && db.reported.has(name)) reports.push(parameterStatus(name, value));
    });
    // A read-back by SHOW (in a transaction that has taken no snapshot) has no other settings:
    // they are read again once the transaction ends.
    if (values.length > names.length) this.applyOthers(db, values[names.length]);
    if (!this.recheck) this.outside = new Map(this.wanted);
    return reports;
  }

  /**
   * The client's transaction is gone with a restarted engine: its settings are those it had
   * before the transaction (a ROLLBACK undoes SET and SET LOCAL), to be switched in again.
   */
  transactionLost(): void {
    // The client last heard the values of its transaction: the next read-back reports the change.
    this.beforeReset ??= new Map(this.wanted);
    this.wanted.clear();
    for (const [k, v] of this.outside) this.wanted.set(k, v);
    this.dirty = true;
  }

  /** Settings changed in the session that are not tracked by name: they follow this client. */
  private readonly others = new Set<string>();

  private applyOthers(db: SharedSettings, json: string | null | undefined): void {
    let changed: Record<string, unknown> = {};
    try {
      changed = json ? (JSON.parse(json) as Record<string, unknown>) : {};
    } catch {
      return;
    }
    for (const name of this.others) {
      if (name in changed) continue;
      this.others.delete(name);
      this.wanted.delete(name);
      db.settings.delete(name);
    }
    for (const [name, value] of Object.entries(changed)) {
      if (typeof value !== 'string') continue;
      this.others.add(name);
      this.wanted.set(name, value);
      db.settings.set(name, value);
    }
  }
}
