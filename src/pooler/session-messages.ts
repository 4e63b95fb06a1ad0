import { GatewayError } from '../errors.js';
import { backendMessages, hasError } from '../wire/backend-scan.js';
import { Backend, Frontend, message, readErrorFields, type TransactionStatus } from '../wire/protocol.js';
import { deallocatedNames, forgetAll } from './statement-guard.js';

/** Small builders and inspectors of protocol messages used by the client session. */

/**
 * Messages up to and including Sync when they only prepare statements; 0 otherwise; 'incomplete'
 * when they only prepare so far but the Sync has not arrived (a Flush makes it a request to answer).
 */
export function prepareOnlyUnitLength(queue: readonly Buffer[]): number | 'incomplete' {
  for (let i = 0; i < queue.length; i++) {
    const m = queue[i] as Buffer;
    switch (m[0]) {
      case Frontend.Sync:
        return i + 1;
      case Frontend.Parse:
        break;
      case Frontend.Flush:
        return 0;
      case Frontend.Describe:
      case Frontend.Close:
        if (m[5] !== 0x53) return 0; // portals belong to a transaction
        break;
      default:
        return 0;
    }
  }
  return queue.length > 0 ? 'incomplete' : 0;
}

/** Longest Parse text looked at for DEALLOCATE (see deallocateUnit). */
const MAX_DEALLOCATE_TEXT = 1024;

/**
 * An extended unit that only runs `DEALLOCATE [PREPARE] ALL`, or `DEALLOCATE [PREPARE] name` of
 * a statement the client has (`owned`): Parse, Bind, Execute and Sync, with a Describe of the
 * statement or the portal if the driver sends one (libpq's PQexecParams, which psycopg uses for
 * them: ALL after a rollback or a DROP, a name when its cache evicts a statement). Its length,
 * the replies a server sends for it minus the ReadyForQuery, and the name (undefined for ALL);
 * 'incomplete' while such a unit's Sync has not arrived (TCP may split it anywhere); undefined
 * for anything else (which the statement guard refuses, or a name the client never prepared,
 * left to the database).
 */
export function deallocateUnit(
  queue: readonly Buffer[],
  owned: { has(name: string): boolean },
): { length: number; replies: Buffer; name: string | undefined } | 'incomplete' | undefined {
  const parse = queue[0];
  if (parse?.[0] !== Frontend.Parse) return undefined;
  const nameEnd = parse.indexOf(0, 5);
  const textEnd = parse.indexOf(0, nameEnd + 1);
  // Checked before every unit that starts with a Parse: a long text (an ordinary statement, or a
  // DEALLOCATE buried in comments, which the statement guard then refuses) is not decoded.
  if (nameEnd < 0 || textEnd < 0 || textEnd - nameEnd > MAX_DEALLOCATE_TEXT) return undefined;
  const text = parse.toString('utf8', nameEnd + 1, textEnd);
  const forget = forgetAll(text);
  let name: string | undefined; // undefined: ALL
  if (forget?.kind !== 'deallocate' || !forget.alone) {
    const named = forget ? undefined : deallocatedNames(text);
    name = named?.alone ? named.names[0] : undefined;
    if (name === undefined || !owned.has(name)) return undefined;
  }
  const tag = name === undefined ? 'DEALLOCATE ALL' : 'DEALLOCATE';
  const statement = parse.subarray(5, nameEnd + 1);
  const replies: Buffer[] = [message(0x31)]; // ParseComplete
  let bound = false;
  for (let i = 1; i < queue.length; i++) {
    const m = queue[i] as Buffer;
    switch (m[0]) {
      case Frontend.Bind: {
        // The statement is the Bind's second string: it must be the one just parsed.
        const portalEnd = m.indexOf(0, 5);
        if (
          bound ||
          portalEnd < 0 ||
          !m.subarray(portalEnd + 1, portalEnd + 1 + statement.length).equals(statement)
        )
          return undefined;
        bound = true;
        replies.push(message(0x32)); // BindComplete
        break;
      }
      case Frontend.Describe:
        // A statement has no parameters; neither it nor the portal returns rows.
        if (m[5] === 0x53 && !bound) replies.push(message(0x74, Buffer.from([0, 0])), message(0x6e));
        else if (m[5] === 0x50 && bound) replies.push(message(0x6e));
        else return undefined;
        break;
      case Frontend.Execute:
        if (!bound) return undefined;
        replies.push(commandComplete(tag));
        if (i + 1 === queue.length) return 'incomplete';
        if (queue[i + 1]?.[0] !== Frontend.Sync) return undefined;
        return { length: i + 2, replies: Buffer.concat(replies), name };
      default:
        return undefined;
    }
  }
  return 'incomplete';
}

/**
 * Ends an unfinished extended unit as Postgres ends one whose client disconnected: rolled back.
 * A bare Sync would commit its implicit transaction, so a Parse that cannot succeed fails the
 * unit first (its error is not for anyone), then the Sync rolls it back.
 */
export function abandonUnit(): Buffer {
  return Buffer.concat([
    message(
      Frontend.Parse,
      '\0',
      'gateway: the client left in the middle of this unit\0',
      Buffer.from([0, 0]),
    ),
    message(Frontend.Sync),
  ]);
}

/** The response with its ReadyForQuery status replaced (a borrowed unit reports the client's). */
export function withReadyStatus(response: Uint8Array, status: TransactionStatus): Uint8Array {
  const out = Buffer.from(response);
  for (const m of backendMessages(out)) if (m.code === 0x5a) out[m.start + 5] = status.charCodeAt(0);
  return out;
}

/** A Parse with its statement text replaced (and no parameter types). */
export function replaceParseText(parse: Buffer, nameEnd: number, sql: string): Buffer {
  return message(Frontend.Parse, parse.subarray(5, nameEnd + 1), `${sql}\0`, Buffer.from([0, 0]));
}

export function commandComplete(tag: string): Buffer {
  return message(Backend.CommandComplete, `${tag}\0`);
}

/** The first ErrorResponse of a response, as a FATAL for the client (startup settings). */
export function findError(response: Uint8Array): GatewayError | undefined {
  if (!hasError(response)) return undefined;
  for (const m of backendMessages(response)) {
    if (m.code !== 0x45) continue;
    const fields = readErrorFields(response.subarray(m.start, m.end));
    return new GatewayError(
      fields.get('C') ?? 'XX000',
      'FATAL',
      fields.get('M') ?? 'invalid startup setting',
      'startup_setting',
    );
  }
  return undefined;
}

/** Offset of a response's closing ReadyForQuery, if it ends with one. */
export function finalReady(response: Uint8Array): number | undefined {
  let last: { code: number; start: number } | undefined;
  for (const m of backendMessages(response)) last = m;
  return last?.code === 0x5a ? last.start : undefined;
}

/** The first ErrorResponse of a response, as it came. */
export function firstErrorMessage(response: Uint8Array): Uint8Array | undefined {
  for (const m of backendMessages(response)) if (m.code === 0x45) return response.subarray(m.start, m.end);
  return undefined;
}
