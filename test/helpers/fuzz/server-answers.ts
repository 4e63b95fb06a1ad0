/** What the server may say: checks that an ErrorResponse or raw answer leaks no internal error. */

/** SQLSTATE classes Postgres defines (XX, internal error, deliberately left out). */
const REAL_CLASSES = new Set(
  '00 01 02 03 08 09 0A 0B 0F 0L 0P 0Z 20 21 22 23 24 25 26 27 28 2B 2D 2F 34 38 39 3B 3D 3F 40 42 44 53 54 55 57 58 72 F0 HV P0'.split(
    ' ',
  ),
);

/** Text that means an internal error or a JavaScript stack trace reached a client. */
const INTERNAL_TEXT = /internal error|\n\s+at |^ {4}at |\.(?:ts|js|mjs|cjs):\d+|(?:^|\W)\w*Error: /im;

/**
 * An XX000 that PostgreSQL itself sends for these inputs (a real server answers the same), not
 * one of the gateway's or a broken session's: a Parse naming a type OID that does not exist gets
 * "cache lookup failed for type N" from the backend (it carries the backend's source location).
 */
export function postgresOwnInternalError(fields: Record<string, string>): boolean {
  return (
    fields.C === 'XX000' &&
    fields.R !== undefined &&
    /^cache lookup failed for type \d+$/.test(fields.M ?? '')
  );
}

/** What is wrong with an ErrorResponse a client received, or undefined when it is a proper one. */
export function errorProblem(fields: Record<string, string>): string | undefined {
  const code = fields.C ?? '';
  if (!/^[0-9A-Z]{5}$/.test(code)) return `malformed SQLSTATE ${JSON.stringify(code)}`;
  if (code.startsWith('XX') && !postgresOwnInternalError(fields)) return `internal SQLSTATE ${code}`;
  if (!REAL_CLASSES.has(code.slice(0, 2))) return `SQLSTATE ${code} of no Postgres class`;
  if (!fields.S || fields.M === undefined) return 'ErrorResponse without severity or message';
  for (const key of ['M', 'D', 'H'] as const) {
    const text = fields[key];
    if (text && INTERNAL_TEXT.test(text)) return `internal text in field ${key}`;
  }
  return undefined;
}

/** Internal-error text anywhere in raw bytes (pre-authentication answers, TLS or not). */
export function rawTextProblem(data: Buffer): string | undefined {
  const text = data.toString('latin1');
  if (/XX000/.test(text)) return 'XX000 in the bytes the server sent';
  if (INTERNAL_TEXT.test(text)) return 'internal error text in the bytes the server sent';
  return undefined;
}
