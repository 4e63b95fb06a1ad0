import { Frontend, message as tagged } from '../wire/protocol.js';
import { closeStatement } from './statement-types.js';
import { cstring, type StatementNames } from './statements.js';

/**
 * Statement names in messages: the client's renamed to the session's on the way in, the
 * session's named back in errors on the way out (statements.ts keeps the two apart).
 */

/** Rewrites the statement name in Parse/Bind/Describe/Close; other messages pass unchanged. */
export function renameStatement(message: Buffer, names: StatementNames): Buffer {
  switch (message[0]) {
    case Frontend.Parse: {
      const name = cstring(message, 5);
      if (name.value === '') return message;
      const rest = Buffer.from(message.subarray(name.end + 1));
      const backend = names.define(name.value, rest);
      return tagged(Frontend.Parse, `${backend}\0`, rest);
    }
    case Frontend.Bind: {
      const portal = cstring(message, 5);
      const statement = cstring(message, portal.end + 1);
      if (statement.value === '') return message;
      return tagged(
        Frontend.Bind,
        message.subarray(5, portal.end + 1),
        `${names.use(statement.value)}\0`,
        message.subarray(statement.end + 1),
      );
    }
    case Frontend.Describe:
    case Frontend.Close: {
      const close = message[0] === Frontend.Close;
      if (message[5] !== 0x53) {
        if (close) names.close(''); // a portal's: counted, not renamed
        return message;
      }
      const name = cstring(message, 6);
      if (name.value === '') {
        if (close) names.close('');
        return message;
      }
      const backend = close ? names.close(name.value) : names.use(name.value);
      return tagged(message[0], 'S', `${backend}\0`);
    }
    default:
      return message;
  }
}

/** Close('S', name) messages for backend statement names, followed by Sync. */
export function closeStatements(backendNames: string[]): Buffer {
  return Buffer.concat([...backendNames.map(closeStatement), tagged(Frontend.Sync)]);
}

/** Rewrites ErrorResponse/NoticeResponse fields that mention backend statement names. */
export function restoreNames(response: Uint8Array, names: StatementNames): Uint8Array {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  let out: Buffer[] | undefined;
  let copied = 0;
  let i = 0;
  let mention = -1;
  while (i + 5 <= buf.length) {
    const end = i + 1 + buf.readUInt32BE(i + 1);
    if (end > buf.length || end < i + 5) break;
    const code = buf[i];
    if (code === 0x45 || code === 0x4e) {
      // One forward scan for the whole response: re-searched only once passed.
      if (mention < i + 5) mention = buf.indexOf('_g', i + 5);
      if (mention < 0) break; // no later message mentions a backend name either
      if (mention >= end) {
        i = end;
        continue;
      }
      mention = -1;
      const fields = buf.toString('utf8', i + 5, end - 1);
      const restored = fields
        .split('\0')
        .map((f) => names.restore(f))
        .join('\0');
      if (restored !== fields) {
        out ??= [];
        out.push(buf.subarray(copied, i), tagged(code, restored, Buffer.from([0])));
        copied = end;
      }
    }
    i = end;
  }
  if (!out) return response;
  out.push(buf.subarray(copied));
  return Buffer.concat(out);
}
