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
