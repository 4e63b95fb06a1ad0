import { GatewayError } from '../errors.js';

/** Control-flow errors and messages of the client session (session.ts). */

/** A CancelRequest ended the client's wait for the session. */
export class Cancelled extends Error {}

/** The holder parked while we queued for a unit that could borrow: try borrowing instead. */
export class Retry extends Error {}

/** This client's running statement was interrupted (cancel, statement timeout, broken engine). */
export class Interrupted extends Error {
  constructor(
    message: string,
    readonly code = '57014',
  ) {
    super(message);
  }
}

export const ENGINE_BROKE =
  'the database stopped answering this statement correctly and was restarted; committed data is kept';

export const copyInExtended = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'COPY FROM STDIN is supported only in a simple Query of its own',
    'copy_in_extended',
  );

/**
 * DEALLOCATE of a statement the client prepared through the protocol, anywhere but alone in a
 * query string or extended unit: the gateway must do it for the client (see runQuery).
 */
export const deallocateNotAlone = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'DEALLOCATE of a protocol-level prepared statement must be sent as a statement of its own',
    'deallocate_batch',
    'send it alone in a query string, or alone in an extended-protocol unit (Parse, Bind, Execute, Sync)',
  );

export const cancelledWait = () =>
  new GatewayError('57014', 'ERROR', 'canceling statement due to user request', 'cancelled');

export const interrupted = (code: string, reason: string) =>
  new GatewayError(code, 'ERROR', reason, code === '57014' ? 'interrupted' : 'engine_broken');

export const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** A message other than CopyData/CopyDone/CopyFail/Flush/Sync during COPY FROM STDIN (as Postgres). */
export const unexpectedDuringCopy = (type: string) =>
  new GatewayError(
    '08P01',
    'ERROR',
    `unexpected message type 0x${type} during COPY from stdin`,
    'copy_protocol',
  );

/**
 * A statement prepared again after its table changed would return other types: Postgres' own
 * error, routine included (asyncpg then prepares the statement again by itself).
 */
export const resultTypeChanged = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'cached plan must not change result type',
    'result_type_changed',
    undefined,
    undefined,
    'RevalidateCachedQuery',
  );

/** DISCARD ALL / DEALLOCATE ALL act on the session, not one client: done only as a query of their own. */
export const forgetAllExtended = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'DISCARD ALL and DEALLOCATE ALL are supported only as a simple query of their own',
    'forget_all_extended',
  );
/** DISCARD ALL / DEALLOCATE ALL beside other statements in one query string. */
export const forgetAllInBatch = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'DISCARD ALL and DEALLOCATE ALL must be sent as a query of their own',
    'forget_all_batch',
    'send the statement alone, with nothing else in the query string',
  );

/**
 * The functions served through the fast-path interface (FunctionCall): the large-object ones that
 * libpq calls that way (client-side lo_import/lo_export, psql's \lo_import, lo_read/lo_write).
 * Their OIDs are fixed in pg_proc. Any other function could change what the gateway cannot see
 * (settings, identity), so it is refused and is to be called with SELECT.
 */
export const FAST_PATH_FUNCTIONS = new Set([
  715, // lo_create
  952, // lo_open
  953, // lo_close
  954, // loread
  955, // lowrite
  956, // lo_lseek
  957, // lo_creat
  958, // lo_tell
  964, // lo_unlink
  1004, // lo_truncate
  3170, // lo_lseek64
  3171, // lo_tell64
  3172, // lo_truncate64
]);

export const FUNCTION_CALL_UNSUPPORTED = () =>
  new GatewayError(
    '0A000',
    'ERROR',
    'the fast-path function call interface serves only the large-object functions',
    'function_call',
    'call the function with SELECT',
  );
