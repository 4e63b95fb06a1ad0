/**
 * Parsers for human-friendly durations and sizes in configuration.
 * A bare number of seconds (or bytes) is accepted too, as PgBouncer does.
 */

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/** Parses `250ms`, `30s`, `5m`, `1h` or a bare number of seconds into milliseconds. */
export function parseDurationMs(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!match) throw new Error(`invalid duration "${text}" (use e.g. 500ms, 30s, 5m)`);
  const unit = (match[2] ?? 's').toLowerCase();
  return Math.round(Number(match[1]) * (DURATION_UNITS[unit] ?? 1000));
}

/** Parses `64KiB`, `100MB`, `1GiB` or a bare number of bytes. */
export function parseBytes(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$/i.exec(text);
  if (!match) throw new Error(`invalid size "${text}" (use e.g. 64KiB, 100MB, 1GiB)`);
  const unit = (match[2] ?? 'b').toLowerCase();
  return Math.round(Number(match[1]) * (SIZE_UNITS[unit] ?? 1));
}
