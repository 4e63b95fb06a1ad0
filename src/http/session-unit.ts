import { randomBytes } from 'node:crypto';
import type { Catalog } from '../catalog/catalog.js';
import type { Database, DatabaseRegistry } from '../databases/registry.js';
import { errors, type GatewayError } from '../errors.js';
import type { ScramLookup } from '../gateway/auth.js';
import type { Logger } from '../log.js';
import { ClientSession } from '../pooler/session.js';
import { limitsOf, type PoolLimits } from '../pooler/session-options.js';
import { MessageFramer } from '../wire/framer.js';
import { query } from '../wire/protocol.js';
import { ReplyReader } from '../wire/sql-over-http.js';

/**
 * Runs one HTTP request as a unit of work on a database's shared session: it takes a client slot
 * (MAX_CLIENTS_PER_DB), waits its turn like any client (QUERY_WAIT_TIMEOUT), runs under
 * STATEMENT_TIMEOUT and the read-only guard, and leaves the session clean (a transaction the
 * request left open is rolled back).
 */

export interface UnitDeps extends PoolLimits {
  catalog: Pick<Catalog, 'getDatabase'>;
  /** Checks the login's verifier is still the database's once it is open (see stillCurrent). */
  scram?: Pick<ScramLookup, 'stillCurrent'> | undefined;
  registry: DatabaseRegistry;
  poolMode: 'transaction' | 'session';
  logger: Logger;
  /** Cluster mode: a reply goes out only while this node provably owns the database. */
  mayAcknowledge?: ((id: string) => boolean) | undefined;
}

/** The reply outgrew the response limit (MAX_HTTP_RESPONSE): answered with 507. */
export class ResponseTooLarge extends Error {}

/**
 * Ends what a unit left open. A batch (`commit`) is committed only when its reply is whole and
 * without error: a 507 then means nothing was done, and a failing COMMIT (a deferred constraint,
 * a serialization failure) is the request's error. Anything else left open is rolled back.
 */
export async function settleUnit(
  result: ReplyReader,
  commit: boolean,
  turn: (messages: Buffer[], into: ReplyReader) => Promise<ReplyReader>,
): Promise<ReplyReader> {
  if (commit && result.status === 'T' && !result.overflowed && !result.error) {
    const done = await turn([query('COMMIT')], new ReplyReader(0));
    result.error ??= done.error;
    result.status = done.status;
  }
  if (result.status !== 'I') await turn([query('ROLLBACK')], new ReplyReader(0));
  if (result.overflowed) throw new ResponseTooLarge();
  return result;
}

/** Headroom for one backend message beyond the response limit before it is refused unread. */
const MESSAGE_SLACK = 64 * 1024;

export interface UnitOptions {
  id: string;
  user: string;
  /** The verifier the request's password was checked against (ScramLookup.stillCurrent). */
  storedKey?: string | undefined;
  /**
   * The database that was open under the id before the password was checked: leasing that same
   * object proves no delete came in between, and the verifier need not be read again.
   */
  openBefore?: Database | undefined;
  messages: Buffer[];
  /** The messages open a batch's transaction, committed once the reply proved whole (settleUnit). */
  commit?: boolean | undefined;
  maxResponseBytes: number;
  /** Rows as arrays (Neon-Array-Mode): their JSON has no column names, so more fit the limit. */
  arrayMode?: boolean | undefined;
  logger: Logger;
}

export interface UnitRun {
  /** Interrupts the running statement (the HTTP client went away). */
  cancel(): void;
  readonly reply: Promise<ReplyReader>;
}

export function runUnit(deps: UnitDeps, opts: UnitOptions): UnitRun {
  let session: ClientSession | undefined;
  let cancelled = false;
  const reply = run(deps, opts, (s) => {
    session = s;
    if (cancelled) s.cancel();
  });
  return {
    reply,
    cancel: () => {
      cancelled = true;
      session?.cancel();
    },
  };
}

async function run(
  deps: UnitDeps,
  opts: UnitOptions,
  started: (session: ClientSession) => void,
): Promise<ReplyReader> {
  const record = await deps.catalog.getDatabase(opts.id);
  if (!record) throw errors.databaseNotFound(opts.id);
  const lease = await deps.registry.connect(record);
  // Deleted and created again since the password was checked: not this request's database.
  const current =
    opts.storedKey === undefined || !deps.scram || (opts.openBefore && lease.database === opts.openBefore)
      ? true
      : await deps.scram.stillCurrent(opts.id, opts.user, opts.storedKey).catch((err: unknown) => {
          lease.release();
          throw err;
        });
  if (!current) {
    lease.release();
    throw errors.databaseNotFound(opts.id);
  }
  const sessionId = randomBytes(6).toString('hex');
  let reader = new ReplyReader(opts.maxResponseBytes, opts.arrayMode === true);
  const framer = new MessageFramer(() => opts.maxResponseBytes + MESSAGE_SLACK);
  let waiter: { resolve: () => void; reject: (err: unknown) => void } | undefined;
  let failure: unknown;
  const fail = (err: unknown) => {
    failure ??= err;
    waiter?.reject(failure);
  };
  const session = new ClientSession({
    database: lease.database,
    poolMode: record.poolMode ?? deps.poolMode,
    settings: {},
    logger: opts.logger,
    sessionId,
    ...limitsOf(deps),
    port: {
      write: (data) => {
        if (failure) return undefined;
        if (deps.mayAcknowledge && !deps.mayAcknowledge(opts.id)) {
          fail(errors.databaseUnavailable(opts.id));
          return undefined;
        }
        try {
          for (const msg of framer.push(data)) reader.push(msg);
        } catch {
          reader.overflowed = true;
          fail(new ResponseTooLarge());
          return undefined;
        }
        if (reader.status !== undefined) waiter?.resolve();
        return undefined;
      },
      end: (err?: GatewayError) => fail(err ?? errors.shuttingDown()),
      drained: () => undefined,
    },
  });
  lease.onTerminate((err) => fail(err));
  started(session);
  const unit = (messages: Buffer[], into: ReplyReader) =>
    new Promise<ReplyReader>((resolve, reject) => {
      reader = into;
      if (failure) return reject(failure);
      waiter = { resolve: () => resolve(into), reject };
      session.push(messages);
    });
  try {
    // A request never leaves a transaction open on the shared session (BEGIN alone, or a failed batch).
    return await settleUnit(await unit(opts.messages, reader), opts.commit === true, unit);
  } finally {
    await session.close();
    lease.release();
  }
}
