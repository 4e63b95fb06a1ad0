/**
 * A client's RESETs of settings it connected with. In Postgres, `RESET name`, `RESET ALL` and
 * `SET name TO DEFAULT` go back to the session's start values, which include the startup packet's
 * (`options=-c`); on the shared session they go back to the database's. So the pooler notes which
 * of them a statement reset (statement-guard.ts, resetSettings) and, once it ran without error,
 * sets the client's start values again (SessionUnits.restoreStartupSettings).
 */
export class StartupResets {
  private pending: { all: boolean; names: Set<string>; local: Set<string> } | undefined;

  constructor(
    private readonly initial: ReadonlyMap<string, string>,
    /** The SET (SET LOCAL) for one start value; undefined for one the switch restores (identity). */
    private readonly setSql: (name: string, value: string, local: boolean) => string | undefined,
  ) {}

  get waiting(): boolean {
    return this.pending !== undefined;
  }

  note(reset: { all: boolean; names: readonly string[]; local?: readonly string[] } | undefined): void {
    if (!reset || this.initial.size === 0) return;
    this.pending ??= { all: false, names: new Set(), local: new Set() };
    this.pending.all ||= reset.all;
    for (const name of reset.names) this.pending.names.add(name);
    for (const name of reset.local ?? []) this.pending.local.add(name);
  }

  /**
   * The SQL that sets the reset start values again, and forgets the resets. Undefined when there
   * is nothing to do, or when the statements failed (their transaction, and the reset, is undone).
   */
  take(failed: boolean, inTransaction = false): string | undefined {
    const pending = this.pending;
    this.pending = undefined;
    if (!pending || failed) return undefined;
    const statements: string[] = [];
    for (const [name, value] of this.initial) {
      const key = name.toLowerCase();
      const session = pending.all || pending.names.has(key);
      // SET LOCAL ... TO DEFAULT: the start value for the rest of the transaction (none outside).
      const local = !session && inTransaction && pending.local.has(key);
      if (!session && !local) continue;
      const sql = this.setSql(name, value, local);
      if (sql) statements.push(sql);
    }
    return statements.length > 0 ? statements.join('; ') : undefined;
  }
}
