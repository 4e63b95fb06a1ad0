import { GatewayError } from '../errors.js';
import { backendMessages, hasError } from '../wire/backend-scan.js';
import { Backend, Frontend, message, readErrorFields, type TransactionStatus } from '../wire/protocol.js';

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
