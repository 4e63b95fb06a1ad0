import { Backend, type TransactionStatus } from './protocol.js';

/** Walks the backend messages of one engine response without copying them. */
export function* backendMessages(
  response: Uint8Array,
): Generator<{ code: number; start: number; end: number }> {
  const view = new DataView(response.buffer, response.byteOffset, response.byteLength);
  let i = 0;
  while (i + 5 <= response.length) {
    const end = i + 1 + view.getUint32(i + 1);
    yield { code: response[i] as number, start: i, end };
    i = end;
  }
}

/** The status of the last ReadyForQuery in a response, if it has one. */
export function lastReadyStatus(response: Uint8Array): TransactionStatus | undefined {
  let status: TransactionStatus | undefined;
  for (const m of backendMessages(response)) {
    if (m.code === Backend.ReadyForQuery)
      status = String.fromCharCode(response[m.start + 5] as number) as TransactionStatus;
  }
  return status;
}

/** Takes the first CopyInResponse ('G') out of a response, returning it and everything else. */
export function splitCopyIn(response: Uint8Array): { copyIn: Uint8Array | undefined; rest: Uint8Array } {
  for (const m of backendMessages(response)) {
    if (m.code !== Backend.CopyInResponse) continue;
    const copyIn = response.subarray(m.start, m.end);
    if (m.start === 0) return { copyIn, rest: response.subarray(m.end) };
    return { copyIn, rest: Buffer.concat([response.subarray(0, m.start), response.subarray(m.end)]) };
  }
  return { copyIn: undefined, rest: response };
}

/** The values of the first DataRow of a response (null for SQL NULL). */
export function firstRow(response: Uint8Array): (string | null)[] | undefined {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  for (const m of backendMessages(response)) {
    if (m.code !== 0x44) continue; // 'D' DataRow
    const count = buf.readInt16BE(m.start + 5);
    const values: (string | null)[] = [];
    let i = m.start + 7;
    for (let c = 0; c < count; c++) {
      const len = buf.readInt32BE(i);
      i += 4;
      values.push(len < 0 ? null : buf.toString('utf8', i, i + len));
      if (len > 0) i += len;
    }
    return values;
  }
  return undefined;
}

/** The first value of every DataRow of a response, in order (null for SQL NULL). */
export function firstColumn(response: Uint8Array): (string | null)[] {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  const values: (string | null)[] = [];
  for (const m of backendMessages(response)) {
    if (m.code !== 0x44 || buf.readInt16BE(m.start + 5) < 1) continue; // 'D' DataRow
    const len = buf.readInt32BE(m.start + 7);
    values.push(len < 0 ? null : buf.toString('utf8', m.start + 11, m.start + 11 + len));
  }
  return values;
}

/** How many messages of type `code` a response has before its first ErrorResponse. */
export function countBeforeError(response: Uint8Array, code: number): number {
  let count = 0;
  for (const m of backendMessages(response)) {
    if (m.code === Backend.ErrorResponse) break;
    if (m.code === code) count++;
  }
  return count;
}

/** Whether a response ends in an ErrorResponse before its ReadyForQuery. */
export function hasError(response: Uint8Array): boolean {
  for (const m of backendMessages(response)) if (m.code === Backend.ErrorResponse) return true;
  return false;
}
