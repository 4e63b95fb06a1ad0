import { activityOf, type DatabaseActivity } from '../databases/activity.js';
import type { Database } from '../databases/database.js';
import { query } from '../wire/protocol.js';
import { NotificationHub } from './notifications.js';
import { TRACKED_SETTINGS } from './settings.js';

/**
 * What a database's one Postgres session looks like to the clients that share it: whose settings
 * it has now, the settings it starts with, and which clients listen to which channels. One per
 * open database, made by the first client and reset when the database restarts.
 */
export class SharedSession {
  /** The client whose settings the session currently has. */
  lastOwner: symbol | undefined;
  /** Tracked settings as the session has them now. */
  settings: Map<string, string>;
  /** Custom (dotted) setting names its clients set: pg_settings lists none of them. */
  readonly customNames = new Set<string>();
  /** Warned once that customNames is full (settings.ts MAX_CUSTOM_NAMES). */
  customNamesFull = false;
  /** Tracked settings as the session starts, restored for clients that did not change them. */
  readonly defaults: ReadonlyMap<string, string>;
  /** Names clients hear about in ParameterStatus. */
  readonly reported: ReadonlySet<string>;
  readonly parameters: Readonly<Record<string, string>>;
  readonly readOnly: boolean;
  /** The session identity is fixed by the database's baseline (read-only and writer databases). */
  readonly fixedIdentity: boolean;
  /** Which clients listen to which channels; the session listens to their union. */
  readonly notifications = new NotificationHub();
  /**
   * Bumped when a statement may have dropped prepared statements behind the gateway's back
   * (DEALLOCATE in dynamic SQL): each client then checks its own before its next extended unit.
   */
  statementsEpoch = 0;
  /** Where its clients' units and waits are counted (metrics, live stats). */
  readonly activity: DatabaseActivity;
  private clientIds = 0;

  constructor(readonly database: Database) {
    this.parameters = database.parameters;
    this.activity = activityOf(database);
    this.readOnly = database.readOnly;
    this.fixedIdentity = database.readOnly || database.engine.baselineSql !== '';
    this.defaults = new Map(
      TRACKED_SETTINGS.filter((n) => this.parameters[n] !== undefined).map((n) => [
        n,
        this.parameters[n] as string,
      ]),
    );
    this.settings = new Map(this.defaults);
    this.reported = new Set(Object.keys(this.parameters));
    database.onRestart(async (engine) => {
      this.reset();
      // A new session listens to nothing: give it its clients' channels back.
      const listen = this.notifications.listenAllSql();
      if (listen) await engine.exec(query(listen));
    });
  }

  /** Short per-database client numbers, used in renamed statement names. */
  nextClientId(): number {
    return ++this.clientIds;
  }

  /** The session is back to how it started (after a restart or a full reset). */
  reset(): void {
    this.settings = new Map(this.defaults);
    this.lastOwner = undefined;
  }
}

const sessions = new WeakMap<Database, SharedSession>();

/** The shared session of an open database (one per Database object). */
export function sharedSession(database: Database): SharedSession {
  let shared = sessions.get(database);
  if (!shared) {
    shared = new SharedSession(database);
    sessions.set(database, shared);
  }
  return shared;
}
