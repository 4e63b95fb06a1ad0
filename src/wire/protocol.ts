/**
 * Pure codec for the few backend messages the gateway writes itself, and for reading the fields
 * of frontend messages it has to inspect. Message letters are noted where they are used.
 */

import type { GatewayError } from '../errors.js';

const encoder = new TextEncoder();

/** Frontend message codes the gateway looks at. */
export const Frontend = {
  Query: 0x51, // Q
  Parse: 0x50, // P
  Bind: 0x42, // B
  Describe: 0x44, // D
  Execute: 0x45, // E
  Close: 0x43, // C
  Sync: 0x53, // S
  Flush: 0x48, // H
  FunctionCall: 0x46, // F
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Terminate: 0x58, // X
} as const;

/** PasswordMessage, SASLInitialResponse and SASLResponse: the login's only message type ('p'). */
export const PASSWORD_MESSAGE = 0x70;

/** Backend message codes the gateway looks at or writes. */
export const Backend = {
  Authentication: 0x52, // R
  ReadyForQuery: 0x5a, // Z
  ErrorResponse: 0x45, // E
  ParameterStatus: 0x53, // S
  BackendKeyData: 0x4b, // K
  CommandComplete: 0x43, // C
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  ParseComplete: 0x31, // 1
  CloseComplete: 0x33, // 3
} as const;

/** Untagged first-message codes (the int32 after the length). */
export const StartupCode = {
  Protocol30: 196608,
  SslRequest: 80877103,
  GssEncRequest: 80877104,
  CancelRequest: 80877102,
} as const;

export type TransactionStatus = 'I' | 'T' | 'E';

/**
 * The one writer of tagged messages: a type byte, an int32 length, then the parts in order
 * (strings are written as UTF-8, without a terminator: pass `'name\0'` for a C string).
 */
export function message(code: number, ...parts: (Uint8Array | string)[]): Buffer {
  const bodies = parts.map((p) => (typeof p === 'string' ? Buffer.from(encoder.encode(p)) : p));
  const length = bodies.reduce((n, b) => n + b.length, 0);
  const out = Buffer.allocUnsafe(5 + length);
  out[0] = code;
  out.writeUInt32BE(4 + length, 1);
  let at = 5;
  for (const b of bodies) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

const tagged = (code: number, body: Uint8Array): Buffer => message(code, body);

function cstrings(...values: string[]): Buffer {
  return Buffer.concat(values.flatMap((v) => [Buffer.from(encoder.encode(v)), Buffer.from([0])]));
}

export function errorResponse(err: GatewayError): Buffer {
  const fields: [string, string | undefined][] = [
    ['S', err.severity],
    ['V', err.severity],
    ['C', err.code],
    ['M', err.message],
    ['D', err.detail],
    ['H', err.hint],
    ['R', err.routine],
  ];
  const parts = fields.filter(([, v]) => v !== undefined).map(([k, v]) => cstrings(`${k}${v}`));
  return tagged(Backend.ErrorResponse, Buffer.concat([...parts, Buffer.from([0])]));
}

export function parameterStatus(name: string, value: string): Buffer {
  return tagged(Backend.ParameterStatus, cstrings(name, value));
}

export function backendKeyData(processId: number, secretKey: number): Buffer {
  const body = Buffer.allocUnsafe(8);
  body.writeInt32BE(processId, 0);
  body.writeInt32BE(secretKey, 4);
  return tagged(Backend.BackendKeyData, body);
}

/**
 * NegotiateProtocolVersion ('v'): we speak 3.0 and none of the named options. The version field
 * carries the whole version number (major << 16 | minor), as Postgres sends it (despite the
 * protocol documentation's "minor version"); libpq 18 refuses a value below 3.0.
 */
export function negotiateProtocolVersion(unsupportedOptions: string[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeInt32BE(StartupCode.Protocol30, 0);
  head.writeInt32BE(unsupportedOptions.length, 4);
  return tagged(0x76, Buffer.concat([head, cstrings(...unsupportedOptions)]));
}

export function readyForQuery(status: TransactionStatus): Buffer {
  return tagged(Backend.ReadyForQuery, Buffer.from(status, 'latin1'));
}

export function query(sql: string): Buffer {
  return tagged(Frontend.Query, cstrings(sql));
}

export const syncMessage = (): Buffer => tagged(Frontend.Sync, Buffer.alloc(0));

export const flushMessage = (): Buffer => tagged(Frontend.Flush, Buffer.alloc(0));

/** A field set of an ErrorResponse/NoticeResponse, keyed by field letter. */
export function readErrorFields(message: Uint8Array): Map<string, string> {
  const fields = new Map<string, string>();
  const buf = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  let i = 5;
  while (i < buf.length && buf[i] !== 0) {
    const key = String.fromCharCode(buf[i] as number);
    const end = buf.indexOf(0, i + 1);
    if (end < 0) break;
    fields.set(key, buf.toString('utf8', i + 1, end));
    i = end + 1;
  }
  return fields;
}

/**
 * Parses a StartupMessage (length, version, then name/value C strings and a final NUL).
 * Returns undefined for a malformed layout, which the caller refuses as Postgres does.
 */
export function readStartupParameters(message: Uint8Array): Record<string, string> | undefined {
  const buf = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  const params: Record<string, string> = Object.create(null);
  let i = 8;
  while (i < buf.length && buf[i] !== 0) {
    const keyEnd = buf.indexOf(0, i);
    const valueEnd = keyEnd < 0 ? -1 : buf.indexOf(0, keyEnd + 1);
    if (valueEnd < 0) return undefined;
    params[buf.toString('utf8', i, keyEnd)] = buf.toString('utf8', keyEnd + 1, valueEnd);
    i = valueEnd + 1;
  }
  return i === buf.length - 1 ? params : undefined;
}
