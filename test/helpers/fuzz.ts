import type net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import fc from 'fast-check';
import pg from 'pg';
import type { GatewayProcess } from './gateway-process.js';
import { rawConnect, SSL_REQUEST, startupMessage, untagged } from './raw.js';
import { loginStartupMessage, parseErrorFields, rawLogin, withTimeout, writeSplit } from './raw-auth.js';

/**
 * Protocol fuzzing of a gateway in a child process, shared by the integration tests (short runs)
 * and `scripts/fuzz.ts` (long runs):
 *
 * - `runProtocolFuzz`: raw clients that log in for real, then send random sequences of valid and
 *   invalid frontend messages, split at random offsets with pauses, to ONE database, while a
 *   well-behaved client commits counter increments on it.
 * - `runPreauthFuzz`: random and partial pre-authentication traffic that must never open a
 *   database and must be cut off by LOGIN_TIMEOUT.
 * - `Monitors`: /healthz, a query on a second database and /metrics (RSS), polled throughout.
 *
 * Every run is generated from `seed + index`, so a failing run can be replayed alone.
 */

// ---------------------------------------------------------------------------------------------
// Frontend message builders

const cstr = (s: string | Uint8Array) =>
  Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s), Buffer.from([0])]);
const i16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
};

/** A tagged message; `declared` overrides the length field (to lie about the body). */
export function tagged(code: number | string, body: Buffer, declared?: number): Buffer {
  const head = Buffer.alloc(5);
  head[0] = typeof code === 'string' ? code.charCodeAt(0) : code;
  head.writeUInt32BE(declared ?? 4 + body.length, 1);
  return Buffer.concat([head, body]);
}

/** One element of a fuzz sequence. */
export interface Piece {
  label: string;
  bytes: Buffer;
  /**
   * The bytes are whole messages with truthful lengths, so what follows is still read as the
   * next message. False when they desynchronise framing (truncated, lying or huge lengths,
   * untagged packets), after which the server may rightly wait for bytes that never come.
   */
  framed: boolean;
  /** A Terminate: the server closes after it. */
  terminates?: boolean;
  /** Protocol messages in `bytes` (a whole extended unit is one piece). */
  messages: number;
}

const piece = (label: string, bytes: Buffer, framed = true, terminates = false, messages = 1): Piece => ({
  label,
  bytes,
  framed,
  terminates,
  messages,
});

// ---------------------------------------------------------------------------------------------
// SQL

/** Ordinary statements on the fuzz table (never on `counter`/`commits`, which the checker owns). */
export const SQL_ORDINARY = [
  'select 1',
  'select $1::int + 1',
  'select $1::text, $2::int',
  'select * from fuzz_t',
  "insert into fuzz_t values (1, 'x')",
  'insert into fuzz_t values ($1::int, $2)',
  'update fuzz_t set v = v',
  'begin',
  'commit',
  'rollback',
  'start transaction isolation level serializable',
  'savepoint sp',
  'rollback to savepoint sp',
  'release savepoint sp',
  'select 1/0',
  "begin; insert into fuzz_t values (2, 'y'); select 1/0",
  "select 1; select 'two'",
  'select pg_sleep(0.05)',
  'copy fuzz_t to stdout',
  'copy fuzz_t from stdin',
  'copy (select 1) to stdout',
  'listen fuzz_ch',
  "notify fuzz_ch, 'x'",
  'unlisten *',
  'prepare fz as select 1',
  'execute fz',
  'deallocate all',
  'show all',
  "select repeat('x', 100000)",
  'select * from generate_series(1, 500)',
  'declare c cursor for select 1',
  'fetch all from c',
  'vacuum fuzz_t',
  'checkpoint',
  'select nosuchcolumn',
  'selec 1',
  '',
  ';',
];

/** Statements a shared, sandboxed session must survive (and must not leak to the next client). */
export const SQL_HOSTILE = [
  "COPY fuzz_t TO PROGRAM 'ls'",
  "COPY fuzz_t FROM PROGRAM 'ls'",
  "ALTER SYSTEM SET wal_buffers='512MB'",
  "CREATE TABLESPACE t LOCATION '/tmp'",
  'SET ROLE pg_read_all_data',
  "SET statement_timeout='1ms'",
  'SET search_path = nowhere',
  'SET default_transaction_read_only = on',
  'SET SESSION AUTHORIZATION pg_read_all_data',
  'RESET ALL',
  'DISCARD ALL',
  "select set_config('search_path', 'nowhere', false)",
  'select pg_reload_conf()',
  'select pg_terminate_backend(pg_backend_pid())',
  'select pg_cancel_backend(pg_backend_pid())',
];

const sqlArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...SQL_ORDINARY) },
  { weight: 3, arbitrary: fc.constantFrom(...SQL_HOSTILE) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
);

const nameArb = fc.constantFrom('', 's1', 's2', 'fz');
const bytesArb = (max: number) => fc.uint8Array({ maxLength: max });

// ---------------------------------------------------------------------------------------------
// Piece arbitraries

const queryArb = sqlArb.map((sql) => piece(`Query(${JSON.stringify(sql)})`, tagged('Q', cstr(sql))));

const parseArb = fc
  .record({
    name: nameArb,
    sql: sqlArb,
    types: fc.array(fc.oneof(fc.constantFrom(0, 16, 23, 25, 1043), fc.integer()), { maxLength: 3 }),
    lieCount: fc.option(fc.integer({ min: -2, max: 5 }), { freq: 5 }),
  })
  .map(({ name, sql, types, lieCount }) =>
    piece(
      `Parse(${JSON.stringify(name)}, ${JSON.stringify(sql)}, [${types}]${lieCount === null ? '' : `, count=${lieCount}`})`,
      tagged(
        'P',
        Buffer.concat([cstr(name), cstr(sql), i16(lieCount ?? types.length), ...types.map((t) => i32(t))]),
      ),
    ),
  );

const parseNoNulArb = fc
  .record({ name: nameArb, sql: fc.constantFrom(...SQL_ORDINARY, ...SQL_HOSTILE), tail: fc.boolean() })
  .map(({ name, sql, tail }) =>
    piece(
      `Parse without NUL(${JSON.stringify(sql)}${tail ? ', +int16' : ''})`,
      tagged('P', Buffer.concat([cstr(name), Buffer.from(sql), ...(tail ? [i16(0)] : [])])),
    ),
  );

const bindArb = fc
  .record({
    portal: fc.constantFrom('', 'p1'),
    stmt: nameArb,
    formats: fc.array(fc.constantFrom(0, 1, 2, -1), { maxLength: 3 }),
    params: fc.array(
      fc.option(
        fc.oneof(fc.constant(Buffer.from('1')), fc.string({ maxLength: 8 }).map(Buffer.from), bytesArb(8)),
      ),
      { maxLength: 3 },
    ),
    badLength: fc.option(fc.constantFrom(-2, 1000, 0x7fffffff), { freq: 6 }),
    results: fc.array(fc.constantFrom(0, 1, 7), { maxLength: 2 }),
    lieParams: fc.option(fc.integer({ min: -1, max: 4 }), { freq: 6 }),
  })
  .map(({ portal, stmt, formats, params, badLength, results, lieParams }) => {
    const values = params.map((p, i) =>
      p === null
        ? i32(-1)
        : Buffer.concat([i32(badLength !== null && i === 0 ? badLength : p.length), Buffer.from(p)]),
    );
    const body = Buffer.concat([
      cstr(portal),
      cstr(stmt),
      i16(formats.length),
      ...formats.map(i16),
      i16(lieParams ?? params.length),
      ...values,
      i16(results.length),
      ...results.map(i16),
    ]);
    return piece(
      `Bind(${JSON.stringify(portal)}, ${JSON.stringify(stmt)}, formats=[${formats}], ${params.length} params${badLength === null ? '' : `, len0=${badLength}`}${lieParams === null ? '' : `, count=${lieParams}`}, results=[${results}])`,
      tagged('B', body),
    );
  });

const kindArb = fc.constantFrom('S', 'P', 'X', '\0');
const describeArb = fc
  .record({ kind: kindArb, name: fc.constantFrom('', 's1', 'p1', 'fz') })
  .map(({ kind, name }) =>
    piece(
      `Describe(${JSON.stringify(kind)}, ${JSON.stringify(name)})`,
      tagged('D', Buffer.concat([Buffer.from(kind), cstr(name)])),
    ),
  );
const closeArb = fc
  .record({ kind: kindArb, name: fc.constantFrom('', 's1', 'p1', 'fz') })
  .map(({ kind, name }) =>
    piece(
      `Close(${JSON.stringify(kind)}, ${JSON.stringify(name)})`,
      tagged('C', Buffer.concat([Buffer.from(kind), cstr(name)])),
    ),
  );
const executeArb = fc
  .record({ portal: fc.constantFrom('', 'p1'), maxRows: fc.constantFrom(0, 1, 2, -1, 0x7fffffff) })
  .map(({ portal, maxRows }) =>
    piece(
      `Execute(${JSON.stringify(portal)}, ${maxRows})`,
      tagged('E', Buffer.concat([cstr(portal), i32(maxRows)])),
    ),
  );
const syncArb = fc.constant(piece('Sync', tagged('S', Buffer.alloc(0))));
const flushArb = fc.constant(piece('Flush', tagged('H', Buffer.alloc(0))));
const copyDataArb = fc
  .oneof(fc.constant(Buffer.from('3\tz\n')), bytesArb(64).map(Buffer.from))
  .map((data) => piece(`CopyData(${data.length} bytes)`, tagged('d', data)));
const copyDoneArb = fc.constant(piece('CopyDone', tagged('c', Buffer.alloc(0))));
const copyFailArb = fc
  .string({ maxLength: 20 })
  .map((m) => piece(`CopyFail(${JSON.stringify(m)})`, tagged('f', cstr(m))));
const terminateArb = fc.constant(piece('Terminate', tagged('X', Buffer.alloc(0)), true, true));
const functionCallArb = fc
  .record({
    oid: fc.integer({ min: 1_000_000, max: 0x7fffffff }),
    args: fc.array(bytesArb(8), { maxLength: 2 }),
  })
  .map(({ oid, args }) =>
    piece(
      `FunctionCall(${oid}, ${args.length} args)`,
      tagged(
        'F',
        Buffer.concat([
          i32(oid),
          i16(0),
          i16(args.length),
          ...args.map((a) => Buffer.concat([i32(a.length), Buffer.from(a)])),
          i16(0),
        ]),
      ),
    ),
  );

/** A well-formed extended-protocol unit, so statements really run through Parse/Bind/Execute. */
const extendedUnitArb = fc
  .record({ name: nameArb, sql: sqlArb, sync: fc.boolean() })
  .map(({ name, sql, sync }) => {
    const params = (sql.match(/\$\d/g) ?? []).length;
    const values = Array.from({ length: params }, () => Buffer.concat([i32(1), Buffer.from('7')]));
    const bytes = Buffer.concat([
      tagged('P', Buffer.concat([cstr(name), cstr(sql), i16(0)])),
      tagged('B', Buffer.concat([cstr(''), cstr(name), i16(0), i16(params), ...values, i16(0)])),
      tagged('D', Buffer.concat([Buffer.from('P'), cstr('')])),
      tagged('E', Buffer.concat([cstr(''), i32(0)])),
      ...(sync ? [tagged('S', Buffer.alloc(0))] : []),
    ]);
    return piece(
      `Unit(${JSON.stringify(name)}, ${JSON.stringify(sql)}${sync ? ', Sync' : ''})`,
      bytes,
      true,
      false,
      sync ? 5 : 4,
    );
  });

const framedValidArb: fc.Arbitrary<Piece> = fc.oneof(
  { weight: 6, arbitrary: queryArb },
  { weight: 4, arbitrary: extendedUnitArb },
  { weight: 3, arbitrary: parseArb },
  { weight: 3, arbitrary: bindArb },
  { weight: 2, arbitrary: describeArb },
  { weight: 2, arbitrary: executeArb },
  { weight: 2, arbitrary: closeArb },
  { weight: 3, arbitrary: syncArb },
  { weight: 1, arbitrary: flushArb },
  { weight: 1, arbitrary: copyDataArb },
  { weight: 1, arbitrary: copyDoneArb },
  { weight: 1, arbitrary: copyFailArb },
  { weight: 1, arbitrary: functionCallArb },
);

const unknownTypeArb = fc
  .record({ code: fc.constantFrom(0x38, 0x70, 0x41, 0x7a, 0x00, 0xff, 0x59, 0x62, 0x76), body: bytesArb(16) })
  .map(({ code, body }) =>
    piece(`Unknown(0x${code.toString(16)}, ${body.length} bytes)`, tagged(code, Buffer.from(body))),
  );

const untaggedArb = fc.constantFrom(
  piece('second StartupMessage', startupMessage({ user: 'postgres', database: 'postgres' }), false),
  piece('SSLRequest after login', SSL_REQUEST, false),
  piece('CancelRequest after login', untagged(80877102, Buffer.alloc(8)), false),
);

const truncatedArb = fc
  .tuple(framedValidArb, fc.nat())
  .filter(([p]) => p.bytes.length > 1)
  .map(([p, n]) => {
    const keep = 1 + (n % (p.bytes.length - 1));
    return piece(`truncated ${p.label} (${keep}/${p.bytes.length} bytes)`, p.bytes.subarray(0, keep), false);
  });

const lyingLengthArb = fc
  .tuple(framedValidArb, fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: -16, max: 16 })))
  .map(([p, d]) => {
    const real = p.bytes.readUInt32BE(1);
    const declared = d >= 0 && d <= 3 ? d : Math.max(0, real + d);
    const bytes = Buffer.from(p.bytes);
    bytes.writeUInt32BE(declared, 1);
    return piece(`${p.label} with length ${declared} (real ${real})`, bytes, declared === real);
  });

/** A declared length under (or over) MAX_MESSAGE_SIZE whose body never (fully) arrives. */
const hugeArb = (maxMessageSize: number) =>
  fc
    .record({
      code: fc.constantFrom('Q', 'd', 'P', 'B', 'p'),
      declared: fc.oneof(
        fc.integer({ min: 1 << 20, max: Math.max(1 << 20, maxMessageSize - 2) }),
        fc.integer({ min: maxMessageSize, max: 0xffffffff }),
      ),
      sent: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 64 * 1024 })),
    })
    .map(({ code, declared, sent }) =>
      piece(
        `${code} declaring ${declared} bytes, sending ${sent}`,
        tagged(code, Buffer.alloc(sent, 0x61), declared),
        false,
      ),
    );

export interface ProtocolRun {
  pieces: Piece[];
  /** Cut points in the concatenated stream, as fractions of its length. */
  cuts: number[];
  /** Pause after each cut (cycled), ms. */
  pauses: number[];
  /** Send the first bytes (up to 200) one at a time. */
  byteByByte: boolean;
  /** Where to split the SSLRequest at login, if at all. */
  loginSplit: number | null;
}

export function protocolRunArb(maxMessageSize: number): fc.Arbitrary<ProtocolRun> {
  const invalidArb: fc.Arbitrary<Piece> = fc.oneof(
    { weight: 2, arbitrary: unknownTypeArb },
    { weight: 2, arbitrary: parseNoNulArb },
    { weight: 1, arbitrary: untaggedArb },
    { weight: 2, arbitrary: truncatedArb },
    { weight: 2, arbitrary: lyingLengthArb },
    { weight: 1, arbitrary: hugeArb(maxMessageSize) },
    { weight: 1, arbitrary: terminateArb },
  );
  const pieceArb = fc.oneof({ weight: 17, arbitrary: framedValidArb }, { weight: 3, arbitrary: invalidArb });
  return fc.record({
    pieces: fc.array(pieceArb, { minLength: 1, maxLength: 10 }),
    cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 10 }),
    pauses: fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 6 }),
    byteByByte: fc.integer({ min: 0, max: 9 }).map((n) => n < 2),
    loginSplit: fc.option(fc.integer({ min: 1, max: 7 }), { freq: 4 }),
  });
}

/** The run for `seed`/`index`: the same on every machine and in every process. */
export function protocolRunAt(seed: number, index: number, maxMessageSize: number): ProtocolRun {
  const [run] = fc.sample(protocolRunArb(maxMessageSize), { seed: (seed + index) | 0, numRuns: 1 });
  return run as ProtocolRun;
}

export function describeRun(run: ProtocolRun): string {
  const stream = Buffer.concat(run.pieces.map((p) => p.bytes));
  const hex = stream.length > 256 ? `${stream.subarray(0, 256).toString('hex')}…` : stream.toString('hex');
  return [
    ...run.pieces.map((p, i) => `  ${i + 1}. ${p.label}${p.framed ? '' : ' [unframed]'}`),
    `  cuts=${run.cuts.map((c) => Math.floor(c * stream.length)).join(',')} pauses=${run.pauses.join(',')}` +
      ` byteByByte=${run.byteByByte} loginSplit=${run.loginSplit}`,
    `  stream (${stream.length} bytes): ${hex}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// What the server may say

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

// ---------------------------------------------------------------------------------------------
// Shared bookkeeping

/** Collects findings; bounded so a systematic failure cannot eat the memory. */
export class Findings {
  /** Violations by kind: how many, and the first few examples (with what reproduces them). */
  readonly violations = new Map<string, { count: number; examples: string[] }>();
  readonly errorsByCode = new Map<string, number>();
  readonly outcomes = new Map<string, number>();
  /** A few examples per category worth reading (not violations). */
  readonly notes = new Map<string, string[]>();

  violation(kind: string, example: string): void {
    const entry = this.violations.get(kind) ?? { count: 0, examples: [] };
    entry.count++;
    if (entry.examples.length < 2) entry.examples.push(example);
    if (this.violations.size < 100 || this.violations.has(kind)) this.violations.set(kind, entry);
  }

  /** The kinds of violation seen, with counts (what tests assert is empty). */
  violationKinds(): string[] {
    return [...this.violations].map(([kind, v]) => `${kind} (x${v.count})`);
  }

  private readonly started: { at: number; where: string }[] = [];

  /** Records that a fuzz run started (for blaming what another client then saw). */
  runStarted(where: string): void {
    this.started.push({ at: Date.now(), where });
    if (this.started.length > 50) this.started.shift();
  }

  /** The (at most 10) runs started in the last `ms`, for a violation's example. */
  recentRuns(ms: number): string {
    const since = Date.now() - ms;
    const recent = this.started.filter((r) => r.at >= since).slice(-10);
    return recent.map((r) => r.where).join(', ') || 'none';
  }

  error(fields: Record<string, string>): void {
    const key = fields.C ?? '?????';
    this.errorsByCode.set(key, (this.errorsByCode.get(key) ?? 0) + 1);
  }

  outcome(kind: string): void {
    this.outcomes.set(kind, (this.outcomes.get(kind) ?? 0) + 1);
  }

  note(kind: string, text: string): void {
    const list = this.notes.get(kind) ?? [];
    if (list.length < 3) list.push(text);
    this.notes.set(kind, list);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Keeps every ErrorResponse a raw client receives and whether a marker row or the close came. */
class ResponseCollector {
  private buffer: Buffer = Buffer.alloc(0);
  readonly errors: Record<string, string>[] = [];
  bytes = 0;
  readyCount = 0;
  markerSeen = false;
  closed = false;
  flooded = false;
  private waiter: (() => void) | undefined;

  constructor(
    private readonly socket: tls.TLSSocket,
    private readonly marker: Buffer,
    initial: Buffer,
  ) {
    socket.on('data', this.onData);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
    if (initial.length > 0) this.onData(initial);
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private readonly onData = (chunk: Buffer) => {
    this.bytes += chunk.length;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 5) {
      const length = this.buffer.readUInt32BE(1);
      if (this.buffer.length < 1 + length) break;
      const type = String.fromCharCode(this.buffer[0] as number);
      const body = this.buffer.subarray(5, 1 + length);
      if (type === 'E') this.errors.push(parseErrorFields(Buffer.from(body)));
      else if (type === 'Z') this.readyCount++;
      else if (type === 'D' && body.includes(this.marker)) this.markerSeen = true;
      this.buffer = this.buffer.subarray(1 + length);
    }
    // A session answering endlessly (an error loop) is a finding; stop reading it.
    if (this.errors.length > 500 || this.bytes > 64 * 1024 * 1024) {
      this.flooded = true;
      this.socket.destroy();
    }
    this.wake();
  };

  /** Waits until `done()` or the deadline; false on timeout. */
  async until(done: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Protocol fuzz (after authentication)

export interface Target {
  gateway: GatewayProcess;
  id: string;
  password: string;
}

export interface ProtocolFuzzOptions {
  target: Target;
  /** Stop starting runs after this long. */
  durationMs: number;
  /** Concurrent raw clients. */
  clients: number;
  seed: number;
  /** MAX_MESSAGE_SIZE the gateway runs with. */
  maxMessageSize: number;
  /** Stop after this many runs even if time is left. */
  maxRuns?: number;
  /** How long a well-framed sequence may go unanswered before it counts as a hang. Default 30 s. */
  answerTimeoutMs?: number;
  findings: Findings;
  /** Progress lines (the script prints them). */
  log?: (line: string) => void;
}

export interface ProtocolFuzzStats {
  runs: number;
  messagesSent: number;
  bytesSent: number;
}

/** Appended to a well-framed sequence: leave COPY, end the unit, end the transaction, then a marker row. */
function trailer(marker: string): Buffer {
  return Buffer.concat([
    tagged('f', cstr('fuzz: end of sequence')),
    tagged('S', Buffer.alloc(0)),
    tagged('Q', cstr('ROLLBACK')),
    tagged('Q', cstr('RESET ALL')),
    tagged('Q', cstr(`SELECT '${marker}'`)),
  ]);
}

/** Runs one generated sequence on a fresh raw connection and records what the server said. */
export async function runProtocolSequence(
  opts: Pick<ProtocolFuzzOptions, 'target' | 'findings' | 'answerTimeoutMs'>,
  run: ProtocolRun,
  where: string,
): Promise<{ messages: number; bytes: number }> {
  const { target, findings } = opts;
  const session = await rawLogin({
    port: target.gateway.port,
    ca: target.gateway.ca,
    id: target.id,
    password: target.password,
    sslRequestSplits: run.loginSplit === null ? [] : [run.loginSplit],
    pauseMs: 5,
    stepTimeoutMs: 20_000,
  });
  const marker = `fuzz-marker-${where.replace(/\W/g, '-')}`;
  const collector = new ResponseCollector(session.socket, Buffer.from(marker), session.leftover);
  const framed = run.pieces.every((p) => p.framed);
  const endsItself = run.pieces.some((p) => p.terminates);
  const stream = Buffer.concat(run.pieces.map((p) => p.bytes));
  let cuts = run.cuts.map((c) => Math.floor(c * stream.length));
  if (run.byteByByte)
    cuts = [...cuts, ...Array.from({ length: Math.min(200, stream.length) }, (_, i) => i + 1)];
  const pauseAt = (i: number) =>
    run.byteByByte && i < 200 ? i % 3 : (run.pauses[i % run.pauses.length] ?? 0);
  let messages = run.pieces.reduce((n, p) => n + p.messages, 0);
  let bytes = stream.length;
  try {
    const written = await writeSplit(session.socket, stream, cuts, pauseAt);
    let outcome: string;
    if (written && framed && !endsItself) {
      const tail = trailer(marker);
      session.socket.write(tail);
      messages += 5;
      bytes += tail.length;
      const readyBefore = collector.readyCount;
      const answered = await collector.until(
        () => collector.markerSeen || collector.closed,
        opts.answerTimeoutMs ?? 30_000,
      );
      if (collector.markerSeen) outcome = 'answered';
      else if (collector.closed)
        outcome = collector.errors.length > 0 ? 'closed with error' : 'closed silently';
      else if (!answered && collector.readyCount > readyBefore) {
        outcome = 'marker lost';
        findings.note(outcome, `${where}\n${describeRun(run)}`);
      } else {
        outcome = 'hang';
        findings.violation(
          `hang: a well-framed sequence got no answer within ${(opts.answerTimeoutMs ?? 30_000) / 1000} s`,
          `${where}\n${describeRun(run)}`,
        );
      }
    } else {
      // Framing is lost (or the client said goodbye): the server may wait for more; give it a moment.
      await collector.until(() => collector.closed, endsItself && framed ? 5000 : 500);
      outcome = collector.closed ? 'closed' : 'left waiting';
      if (!collector.closed && endsItself && framed) {
        findings.note('still open 5 s after a Terminate', `${where}\n${describeRun(run)}`);
      }
    }
    if (outcome === 'closed silently' && !endsItself) {
      findings.note('closed without an ErrorResponse', `${where}\n${describeRun(run)}`);
    }
    findings.outcome(outcome);
    if (collector.flooded) {
      findings.violation(
        'flood: the server kept answering (>500 ErrorResponses or >64 MiB)',
        `${where}: ${collector.errors.length} ErrorResponses, ${collector.bytes} bytes\n${describeRun(run)}`,
      );
    }
    for (const fields of collector.errors) {
      findings.error(fields);
      if (postgresOwnInternalError(fields))
        findings.note("PostgreSQL's own XX000 (as a real server)", fields.M ?? '');
      const problem = errorProblem(fields);
      if (problem) {
        findings.violation(
          `bad ErrorResponse: ${problem}`,
          `${where}: ${fields.S} ${fields.C} ${JSON.stringify(fields.M)}\n${describeRun(run)}`,
        );
      }
    }
  } finally {
    session.socket.destroy();
  }
  return { messages, bytes };
}

/** Several raw clients running generated sequences against one database until the time is up. */
export async function runProtocolFuzz(opts: ProtocolFuzzOptions): Promise<ProtocolFuzzStats> {
  const stats: ProtocolFuzzStats = { runs: 0, messagesSent: 0, bytesSent: 0 };
  const deadline = Date.now() + opts.durationMs;
  let next = 0;
  const worker = async (w: number) => {
    while (Date.now() < deadline && (opts.maxRuns === undefined || next < opts.maxRuns)) {
      const index = next++;
      const run = protocolRunAt(opts.seed, index, opts.maxMessageSize);
      const where = `seed ${opts.seed} run ${index}`;
      opts.findings.runStarted(where);
      try {
        const sent = await runProtocolSequence(opts, run, where);
        stats.messagesSent += sent.messages;
        stats.bytesSent += sent.bytes;
      } catch (err) {
        // Logging in must keep working whatever other clients do.
        opts.findings.violation(
          'fuzz client could not log in or talk',
          `${where} (client ${w}): ${(err as Error).message}`,
        );
        await sleep(200);
      }
      stats.runs++;
      if (stats.runs % 50 === 0) opts.log?.(`protocol fuzz: ${stats.runs} runs`);
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, w) => worker(w)));
  return stats;
}

// ---------------------------------------------------------------------------------------------
// The well-behaved client: counter increments whose commits are counted

export const FUZZ_SCHEMA = `
  create table counter (n int not null);
  insert into counter values (0);
  create table commits (id text primary key);
  create table fuzz_t (id int, v text);
  insert into fuzz_t values (0, 'seed');
`;

/**
 * What an error the counter client got says about the fuzz, when it is not a legitimate outcome
 * of fuzzing (queue timeouts, restarts and lost connections are): a role, search_path,
 * read-only default, statement timeout or aborted transaction left on the shared session by
 * another client, a session another client broke, or an internal error.
 */
function counterErrorProblem(err: { code?: string; message?: string }): string | undefined {
  const code = err.code ?? '';
  if (code.startsWith('XX')) return 'an internal error';
  // Its statements are harmless: a broken engine it meets was broken by another client.
  if (code === '58000') return "another client's damage to the shared session reached it";
  if (['42501', '42P01', '25006', '25P02', '25001'].includes(code)) {
    return "another client's session state leaked into it";
  }
  if (code === '57014' && /statement timeout/i.test(err.message ?? '')) {
    return "another client's statement_timeout leaked into it";
  }
  return undefined;
}

export interface CounterReport {
  acknowledged: number;
  inDoubt: number;
  inDoubtCommitted: number;
  counter: number;
  committedRows: number;
  errorsByCode: Record<string, number>;
  ok: boolean;
  problems: string[];
}

export class CounterClient {
  private readonly acked: string[] = [];
  private readonly inDoubt: string[] = [];
  private readonly errors = new Map<string, number>();
  private stopped = false;
  private loop: Promise<void> | undefined;
  private seq = 0;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly findings: Findings,
    private readonly tag = `c${Date.now().toString(36)}`,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  private count(key: string) {
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  private async run(): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.stopped) {
      if (!client) {
        const c = new pg.Client({ ...this.config, query_timeout: 60_000, connectionTimeoutMillis: 20_000 });
        c.on('error', () => undefined);
        try {
          await c.connect();
          client = c;
        } catch (err) {
          this.count(`connect ${(err as { code?: string }).code ?? 'failed'}`);
          await c.end().catch(() => undefined);
          await sleep(200);
          continue;
        }
      }
      const id = `${this.tag}-${this.seq++}`;
      let phase = 'begin';
      try {
        await client.query('begin');
        phase = 'work';
        await client.query('update counter set n = n + 1');
        await client.query('insert into commits (id) values ($1)', [id]);
        phase = 'commit';
        const result = await client.query('commit');
        if (result.command === 'COMMIT') this.acked.push(id);
        else this.findings.violation(`counter client: COMMIT answered ${result.command}`, id);
      } catch (err) {
        const e = err as { code?: string; message?: string; severity?: string };
        this.count(e.code ?? 'connection');
        const problem = counterErrorProblem(e);
        if (problem) {
          this.findings.violation(
            `counter client got ${e.code} "${e.message}": ${problem}`,
            `transaction ${id}, phase ${phase}; latest fuzz runs started: ${this.findings.recentRuns(3000)}`,
          );
        }
        // Whether a COMMIT that failed this way took effect is decided at the end from `commits`.
        if (phase === 'commit') this.inDoubt.push(id);
        if (!e.code || e.severity === 'FATAL' || e.code.startsWith('08') || e.code.startsWith('57')) {
          await client.end().catch(() => undefined);
          client = undefined;
        } else {
          await client.query('rollback').catch(async () => {
            await client?.end().catch(() => undefined);
            client = undefined;
          });
        }
      }
      await sleep(Math.floor(Math.random() * 20));
    }
    await client?.end().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** Compares the table with the acknowledged commits (call after stop). */
  async verify(): Promise<CounterReport> {
    const problems: string[] = [];
    const client = new pg.Client({ ...this.config, query_timeout: 60_000, connectionTimeoutMillis: 20_000 });
    client.on('error', () => undefined);
    let counter = -1;
    let rows: string[] = [];
    try {
      await client.connect();
      counter = Number((await client.query('select n from counter')).rows[0]?.n);
      rows = (await client.query<{ id: string }>('select id from commits')).rows.map((r) => r.id);
    } finally {
      await client.end().catch(() => undefined);
    }
    const committed = new Set(rows);
    const acked = new Set(this.acked);
    const doubtful = new Set(this.inDoubt);
    const lost = this.acked.filter((id) => !committed.has(id));
    const phantom = rows.filter((id) => id.startsWith(this.tag) && !acked.has(id) && !doubtful.has(id));
    const inDoubtCommitted = this.inDoubt.filter((id) => committed.has(id)).length;
    if (counter !== rows.length) problems.push(`counter is ${counter} but ${rows.length} commit rows exist`);
    if (lost.length > 0) problems.push(`${lost.length} acknowledged commits are missing (e.g. ${lost[0]})`);
    if (phantom.length > 0)
      problems.push(`${phantom.length} commits that failed took effect (e.g. ${phantom[0]})`);
    if (counter !== this.acked.length + inDoubtCommitted) {
      problems.push(
        `counter ${counter} != acknowledged ${this.acked.length} + in-doubt committed ${inDoubtCommitted}`,
      );
    }
    return {
      acknowledged: this.acked.length,
      inDoubt: this.inDoubt.length,
      inDoubtCommitted,
      counter,
      committedRows: rows.length,
      errorsByCode: Object.fromEntries(this.errors),
      ok: problems.length === 0,
      problems,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Monitors: /healthz, another database, /metrics

export interface MonitorReport {
  healthzPolls: number;
  worstHealthzMs: number;
  otherDbPolls: number;
  worstOtherDbMs: number;
  baseRss: number;
  maxRss: number;
  maxOpenDatabases: number;
  serverAlive: boolean;
}

export interface MonitorOptions {
  gateway: GatewayProcess;
  /** A database the fuzz does not touch; `select 1` on it must keep answering. */
  otherDb: pg.ClientConfig;
  findings: Findings;
  /** A poll slower than this is a hang. Default 15 s. */
  hangMs?: number;
  intervalMs?: number;
}

export class Monitors {
  private stopped = false;
  private loops: Promise<void>[] = [];
  private readonly report: MonitorReport = {
    healthzPolls: 0,
    worstHealthzMs: 0,
    otherDbPolls: 0,
    worstOtherDbMs: 0,
    baseRss: 0,
    maxRss: 0,
    maxOpenDatabases: 0,
    serverAlive: true,
  };

  constructor(private readonly opts: MonitorOptions) {}

  private get hangMs() {
    return this.opts.hangMs ?? 15_000;
  }

  private get interval() {
    return this.opts.intervalMs ?? 250;
  }

  async start(): Promise<void> {
    const m = await this.opts.gateway.metrics(this.hangMs);
    this.report.baseRss = m.rss;
    this.report.maxRss = m.rss;
    this.loops = [this.healthz(), this.otherDb(), this.metrics()];
  }

  private async healthz(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      try {
        const res = await this.opts.gateway.adminGet('/healthz', this.hangMs);
        if (res.status !== 200) this.opts.findings.violation(`/healthz answered ${res.status}`, res.body);
      } catch (err) {
        this.opts.findings.violation('/healthz did not answer', (err as Error).message);
      }
      this.report.healthzPolls++;
      this.report.worstHealthzMs = Math.max(this.report.worstHealthzMs, Date.now() - started);
      await sleep(this.interval);
    }
  }

  private async otherDb(): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.stopped) {
      const started = Date.now();
      try {
        if (!client) {
          const c = new pg.Client({ ...this.opts.otherDb, connectionTimeoutMillis: this.hangMs });
          c.on('error', () => undefined);
          try {
            await c.connect();
          } catch (err) {
            await c.end().catch(() => undefined);
            throw err;
          }
          client = c;
        }
        const res = await withTimeout(
          client.query('select 1 as one'),
          this.hangMs,
          'select 1 on the other database',
        );
        if (res.rows[0]?.one !== 1) {
          this.opts.findings.violation('other database: select 1 answered wrongly', JSON.stringify(res.rows));
        }
      } catch (err) {
        this.opts.findings.violation('other database: select 1 failed', (err as Error).message);
        await client?.end().catch(() => undefined);
        client = undefined;
      }
      this.report.otherDbPolls++;
      this.report.worstOtherDbMs = Math.max(this.report.worstOtherDbMs, Date.now() - started);
      await sleep(this.interval);
    }
    await client?.end().catch(() => undefined);
  }

  private async metrics(): Promise<void> {
    while (!this.stopped) {
      if (!this.opts.gateway.alive()) {
        this.report.serverAlive = false;
        this.opts.findings.violation('the server process exited', `${this.opts.gateway.exitStatus()}`);
        return;
      }
      try {
        const m = await this.opts.gateway.metrics(this.hangMs);
        if (m.rss > this.report.maxRss) this.report.maxRss = m.rss;
        if (m.openDatabases > this.report.maxOpenDatabases) this.report.maxOpenDatabases = m.openDatabases;
      } catch (err) {
        this.opts.findings.violation('/metrics did not answer', (err as Error).message);
      }
      await sleep(1000);
    }
  }

  async stop(): Promise<MonitorReport> {
    this.stopped = true;
    await Promise.all(this.loops);
    this.report.serverAlive = this.report.serverAlive && this.opts.gateway.alive();
    return { ...this.report };
  }
}

// ---------------------------------------------------------------------------------------------
// Pre-authentication fuzz

export type PreauthAction =
  | { kind: 'random'; bytes: Uint8Array; cuts: number[]; pause: number }
  | {
      kind: 'partial';
      packet: 'ssl' | 'gss' | 'cancel' | 'startup';
      cuts: number[];
      keepFraction: number;
      pause: number;
    }
  | { kind: 'oversized'; length: number; code: number }
  | { kind: 'tls-garbage'; bytes: Uint8Array }
  | { kind: 'hello-mutant'; cutFraction: number; flips: number[] }
  | { kind: 'slowloris'; intervalMs: number; tls: boolean }
  | { kind: 'idle' }
  | { kind: 'tls-stall'; stage: 'handshake-done' | 'startup-partial' | 'after-startup' | 'mid-scram' }
  | { kind: 'bad-password'; startupCut: number }
  | { kind: 'bad-sni'; servername: string };

export const preauthActionArb: fc.Arbitrary<PreauthAction> = fc.oneof(
  fc.record({
    kind: fc.constant('random' as const),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 300 }),
    cuts: fc.array(fc.nat({ max: 300 }), { maxLength: 5 }),
    pause: fc.integer({ min: 0, max: 50 }),
  }),
  fc.record({
    kind: fc.constant('partial' as const),
    packet: fc.constantFrom('ssl' as const, 'gss' as const, 'cancel' as const, 'startup' as const),
    cuts: fc.array(fc.nat({ max: 60 }), { minLength: 1, maxLength: 6 }),
    keepFraction: fc.oneof(fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true })),
    pause: fc.integer({ min: 1, max: 100 }),
  }),
  fc.record({
    kind: fc.constant('oversized' as const),
    length: fc.oneof(fc.integer({ min: 10_001, max: 0xffffffff }), fc.integer({ min: 0, max: 7 })),
    code: fc.constantFrom(196608, 80877103, 80877102, 80877104, 0x12345678),
  }),
  fc.record({
    kind: fc.constant('tls-garbage' as const),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 400 }),
  }),
  fc.record({
    kind: fc.constant('hello-mutant' as const),
    cutFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    flips: fc.array(fc.nat({ max: 400 }), { maxLength: 4 }),
  }),
  fc.record({
    kind: fc.constant('slowloris' as const),
    intervalMs: fc.integer({ min: 150, max: 250 }),
    tls: fc.boolean(),
  }),
  fc.constant({ kind: 'idle' as const }),
  fc.record({
    kind: fc.constant('tls-stall' as const),
    stage: fc.constantFrom(
      'handshake-done' as const,
      'startup-partial' as const,
      'after-startup' as const,
      'mid-scram' as const,
    ),
  }),
  fc.record({ kind: fc.constant('bad-password' as const), startupCut: fc.nat({ max: 45 }) }),
  fc.record({
    kind: fc.constant('bad-sni' as const),
    servername: fc.constantFrom(
      'nosuchdb.db.example.com',
      'UPPER.db.example.com',
      'x.other.example',
      'db.example.com',
    ),
  }),
);

export function preauthActionAt(seed: number, index: number): PreauthAction {
  const [action] = fc.sample(preauthActionArb, { seed: (seed + index) | 0, numRuns: 1 });
  return action as PreauthAction;
}

export function describeAction(action: PreauthAction): string {
  return JSON.stringify(action, (_, v) =>
    v instanceof Uint8Array ? `${v.length} bytes: ${Buffer.from(v).subarray(0, 64).toString('hex')}` : v,
  );
}

let helloCache: Buffer | undefined;

/** A real TLS ClientHello for `target.db.example.com`, captured from Node's TLS client. */
export async function captureClientHello(servername: string): Promise<Buffer> {
  if (helloCache) return helloCache;
  const hello = await new Promise<Buffer>((resolve, reject) => {
    const duplex = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(Buffer.from(chunk));
        cb();
      },
    });
    const socket = tls.connect({ socket: duplex, servername, rejectUnauthorized: false });
    socket.on('error', () => undefined);
    setTimeout(() => reject(new Error('no ClientHello')), 5000).unref();
    setTimeout(() => socket.destroy(), 100).unref();
  });
  helloCache = hello;
  return hello;
}

export interface PreauthOptions {
  gateway: GatewayProcess;
  /** An existing database whose name the fuzz uses (SNI); it must never be opened. */
  id: string;
  password: string;
  loginTimeoutMs: number;
  /** Allowed beyond LOGIN_TIMEOUT before a connection counts as not closed. Default 5 s. */
  marginMs?: number;
  findings: Findings;
}

/** A connection the server must close; resolves with when it closed (ms from connect) and what it sent. */
class Watched {
  readonly started = Date.now();
  closedAt: number | undefined;
  readonly received: Buffer[] = [];
  receivedBytes = 0;
  private waiter: (() => void) | undefined;

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', () => undefined);
    socket.on('close', this.onClose);
  }

  readonly onData = (chunk: Buffer) => {
    this.receivedBytes += chunk.length;
    if (this.receivedBytes < 1_000_000) this.received.push(chunk);
    this.wake();
  };

  readonly onClose = () => {
    this.closedAt ??= Date.now();
    this.wake();
  };

  /** Also watch a TLS socket layered on this one (its plaintext is what the server said). */
  watchTls(secure: tls.TLSSocket) {
    this.socket.off('data', this.onData);
    secure.on('data', this.onData);
    secure.on('error', () => undefined);
    secure.on('close', this.onClose);
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  get closed() {
    return this.closedAt !== undefined;
  }

  /** Waits for some bytes or the close, at most `ms`. */
  async next(ms: number): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async closedWithin(deadline: number): Promise<boolean> {
    while (!this.closed && Date.now() < deadline) await this.next(Math.max(1, deadline - Date.now()));
    return this.closed;
  }
}

const write = (socket: net.Socket, data: Buffer) => {
  if (!socket.destroyed && !socket.writableEnded) socket.write(data);
};

function cancelRequest(): Buffer {
  return untagged(80877102, Buffer.concat([i32(12345), i32(67890)]));
}

/** Starts TLS on a connection that got 'S'; resolves once the handshake is done (or fails). */
async function startTls(
  w: Watched,
  opts: PreauthOptions,
  servername: string,
  deadline: number,
): Promise<tls.TLSSocket | undefined> {
  write(w.socket, SSL_REQUEST);
  while (!w.closed && w.receivedBytes < 1 && Date.now() < deadline) await w.next(500);
  if (w.closed || w.received[0]?.[0] !== 0x53) return undefined;
  const secure = tls.connect({
    socket: w.socket,
    ca: opts.gateway.ca,
    servername,
    rejectUnauthorized: false,
  });
  w.watchTls(secure);
  const ok = await new Promise<boolean>((resolve) => {
    setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
    secure.once('secureConnect', () => resolve(true));
    secure.once('error', () => resolve(false));
    secure.once('close', () => resolve(false));
  });
  return ok ? secure : undefined;
}

/** Performs one pre-authentication action and checks how the server ended it. */
export async function runPreauthAction(
  opts: PreauthOptions,
  action: PreauthAction,
  where: string,
): Promise<void> {
  const { findings } = opts;
  if (action.kind === 'bad-password') return badPassword(opts, action.startupCut, where);
  const raw = await withTimeout(rawConnect(opts.gateway.port), 10_000, 'TCP connect');
  const w = new Watched(raw);
  const deadline = w.started + opts.loginTimeoutMs + (opts.marginMs ?? 5000);
  const sni = `${opts.id}.db.example.com`;
  try {
    switch (action.kind) {
      case 'random':
        await writeSplit(raw, Buffer.from(action.bytes), action.cuts, action.pause);
        break;
      case 'partial': {
        const packet =
          action.packet === 'ssl'
            ? SSL_REQUEST
            : action.packet === 'gss'
              ? untagged(80877104)
              : action.packet === 'cancel'
                ? cancelRequest()
                : startupMessage({ user: 'postgres', database: opts.id });
        const keep = Math.max(1, Math.round(packet.length * action.keepFraction));
        await writeSplit(raw, packet.subarray(0, keep), action.cuts, action.pause);
        break;
      }
      case 'oversized': {
        const head = Buffer.alloc(8);
        head.writeUInt32BE(action.length, 0);
        head.writeUInt32BE(action.code >>> 0, 4);
        write(raw, head);
        break;
      }
      case 'tls-garbage':
        write(raw, SSL_REQUEST);
        await w.next(1000);
        write(raw, Buffer.from(action.bytes));
        break;
      case 'hello-mutant': {
        const hello = Buffer.from(await captureClientHello(sni));
        for (const f of action.flips) {
          const at = f % hello.length;
          hello[at] = (hello[at] ?? 0) ^ 0x5a;
        }
        write(raw, SSL_REQUEST);
        await w.next(1000);
        write(raw, hello.subarray(0, Math.max(1, Math.floor(hello.length * action.cutFraction))));
        break;
      }
      case 'slowloris': {
        // One byte at a time of a StartupMessage (plain) or of an SSLRequest + ClientHello.
        const bytes = action.tls
          ? Buffer.concat([SSL_REQUEST, await captureClientHello(sni)])
          : startupMessage({ user: 'postgres', database: opts.id });
        for (let i = 0; i < bytes.length && !w.closed && Date.now() < deadline; i++) {
          write(raw, bytes.subarray(i, i + 1));
          await sleep(action.intervalMs);
        }
        break;
      }
      case 'idle':
        break;
      case 'tls-stall': {
        const secure = await startTls(w, opts, sni, deadline);
        if (!secure || action.stage === 'handshake-done') break;
        const startup = loginStartupMessage();
        if (action.stage === 'startup-partial') {
          write(secure, startup.subarray(0, 10));
          break;
        }
        write(secure, startup);
        if (action.stage === 'mid-scram') {
          await w.next(1000);
          const first = Buffer.from('n,,n=*,r=abcdefghijklmnop');
          write(secure, tagged('p', Buffer.concat([cstr('SCRAM-SHA-256'), i32(first.length), first])));
        }
        break;
      }
      case 'bad-sni': {
        const secure = await startTls(w, opts, action.servername, deadline);
        if (secure) write(secure, loginStartupMessage());
        break;
      }
    }
    const closed = await w.closedWithin(deadline);
    const elapsed = (w.closedAt ?? Date.now()) - w.started;
    findings.outcome(closed ? `preauth ${action.kind}: closed` : `preauth ${action.kind}: NOT closed`);
    if (!closed) {
      findings.violation(
        `pre-auth ${action.kind}: connection not closed within LOGIN_TIMEOUT + margin`,
        `${where}: still open ${elapsed} ms after connect (LOGIN_TIMEOUT ${opts.loginTimeoutMs} ms): ${describeAction(action)}`,
      );
    }
    const received = Buffer.concat(w.received);
    const problem = rawTextProblem(received);
    if (problem) {
      findings.violation(
        `pre-auth ${action.kind}: ${problem}`,
        `${where}: ${JSON.stringify(received.toString('latin1').slice(0, 300))} — ${describeAction(action)}`,
      );
    }
    for (const fields of plaintextErrors(received)) {
      findings.error(fields);
      const p = errorProblem(fields);
      if (p) {
        findings.violation(
          `pre-auth ${action.kind}: bad ErrorResponse: ${p}`,
          `${where}: ${fields.C} ${JSON.stringify(fields.M)} — ${describeAction(action)}`,
        );
      }
    }
  } finally {
    raw.destroy();
  }
}

/** A real SCRAM exchange with the wrong password: refused with 28P01, and no database opened. */
async function badPassword(opts: PreauthOptions, startupCut: number, where: string): Promise<void> {
  const started = Date.now();
  try {
    const session = await rawLogin({
      port: opts.gateway.port,
      ca: opts.gateway.ca,
      id: opts.id,
      password: `${opts.password}-wrong`,
      startupSplits: [startupCut],
      stepTimeoutMs: opts.loginTimeoutMs + (opts.marginMs ?? 5000),
    });
    session.socket.destroy();
    opts.findings.violation('pre-auth: a wrong password was accepted', where);
  } catch (err) {
    const fields = (err as { fields?: Record<string, string> }).fields;
    opts.findings.outcome(`preauth bad-password: ${fields?.C ?? 'no answer'}`);
    if (!fields) {
      opts.findings.violation(
        'pre-auth: a wrong password got no proper refusal',
        `${where}: ${(err as Error).message} after ${Date.now() - started} ms`,
      );
    } else {
      opts.findings.error(fields);
      // 28P01, or the login timeout when the brute-force throttle delays the answer past it.
      const throttled = fields.C === '08P01' && /timed out/.test(fields.M ?? '');
      if (fields.C !== '28P01' && !throttled) {
        opts.findings.violation(
          `pre-auth: a wrong password was answered ${fields.C}`,
          `${where}: ${fields.M}`,
        );
      }
    }
  }
}

/** ErrorResponses found in what a pre-auth connection received ('E' + sane length). */
function plaintextErrors(data: Buffer): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (let i = data.indexOf(0x45); i >= 0 && i + 5 <= data.length; i = data.indexOf(0x45, i + 1)) {
    const length = data.readUInt32BE(i + 1);
    if (length < 8 || length > 4096 || i + 1 + length > data.length) continue;
    const body = data.subarray(i + 5, i + 1 + length);
    if (body[0] !== 0x53 || body[body.length - 1] !== 0) continue; // fields start with 'S'
    out.push(parseErrorFields(Buffer.from(body)));
  }
  return out;
}

export interface PreauthStats {
  actions: number;
  idleConnections: number;
}

/**
 * `clients` concurrent loops of generated pre-auth actions for `durationMs`, plus `idle`
 * connections opened at the start that never send a byte.
 */
export async function runPreauthFuzz(
  opts: PreauthOptions & {
    durationMs: number;
    clients: number;
    seed: number;
    idle: number;
    log?: (line: string) => void;
  },
): Promise<PreauthStats> {
  const stats: PreauthStats = { actions: 0, idleConnections: 0 };
  const deadline = Date.now() + opts.durationMs;
  const idle = Array.from({ length: opts.idle }, async (_, i) => {
    await runPreauthAction(opts, { kind: 'idle' }, `idle connection ${i}`).catch((err: Error) =>
      opts.findings.violation('pre-auth idle connection failed', `idle connection ${i}: ${err.message}`),
    );
    stats.idleConnections++;
  });
  let next = 0;
  const worker = async () => {
    while (Date.now() < deadline) {
      const index = next++;
      const action = preauthActionAt(opts.seed, index);
      try {
        await runPreauthAction(opts, action, `preauth seed ${opts.seed} action ${index}`);
      } catch (err) {
        opts.findings.violation(
          `pre-auth ${action.kind}: client failed`,
          `preauth seed ${opts.seed} action ${index}: ${(err as Error).message} — ${describeAction(action)}`,
        );
      }
      stats.actions++;
      if (stats.actions % 100 === 0) opts.log?.(`preauth fuzz: ${stats.actions} actions`);
    }
  };
  await Promise.all([...idle, ...Array.from({ length: opts.clients }, worker)]);
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Reporting

export interface FuzzSummary {
  seed: number;
  protocol?: ProtocolFuzzStats;
  preauth?: PreauthStats;
  counter?: CounterReport;
  monitors?: MonitorReport;
  findings: Findings;
  serverErrorLines: string[];
}

export function formatSummary(s: FuzzSummary): string {
  const mb = (n: number) => `${Math.round(n / (1024 * 1024))} MiB`;
  const lines = [`seed: ${s.seed}`];
  if (s.protocol) {
    lines.push(
      `protocol fuzz: ${s.protocol.runs} runs, ${s.protocol.messagesSent} messages, ${s.protocol.bytesSent} bytes sent`,
    );
  }
  if (s.preauth)
    lines.push(`pre-auth fuzz: ${s.preauth.actions} actions, ${s.preauth.idleConnections} idle connections`);
  lines.push(`outcomes: ${JSON.stringify(Object.fromEntries(s.findings.outcomes))}`);
  lines.push(
    `errors by SQLSTATE: ${JSON.stringify(Object.fromEntries([...s.findings.errorsByCode].sort((a, b) => b[1] - a[1])))}`,
  );
  if (s.counter) {
    const c = s.counter;
    lines.push(
      `counter: ${c.counter} = acknowledged ${c.acknowledged} + in-doubt committed ${c.inDoubtCommitted}/${c.inDoubt}: ` +
        `${c.ok ? 'OK' : `FAILED (${c.problems.join('; ')})`}; counter client errors ${JSON.stringify(c.errorsByCode)}`,
    );
  }
  if (s.monitors) {
    const m = s.monitors;
    lines.push(
      `server alive: ${m.serverAlive}; RSS ${mb(m.baseRss)} -> max ${mb(m.maxRss)} (growth ${mb(m.maxRss - m.baseRss)}); ` +
        `open databases max ${m.maxOpenDatabases}`,
    );
    lines.push(
      `worst /healthz ${m.worstHealthzMs} ms (${m.healthzPolls} polls); worst other-db query ${m.worstOtherDbMs} ms (${m.otherDbPolls} polls)`,
    );
  }
  for (const [kind, examples] of s.findings.notes) {
    lines.push(`note: ${kind} (e.g.):`, ...examples.map((e) => `  ${e.replace(/\n/g, '\n  ')}`));
  }
  if (s.serverErrorLines.length > 0) {
    lines.push(
      `server error log lines: ${s.serverErrorLines.length}`,
      ...s.serverErrorLines.slice(0, 5).map((l) => `  ${l.slice(0, 600)}`),
    );
  }
  lines.push(`violations: ${s.findings.violations.size === 0 ? 'none' : ''}`);
  for (const [kind, v] of s.findings.violations) {
    lines.push(
      `  - ${kind} (x${v.count}), e.g.:`,
      ...v.examples.map((e) => `      ${e.replace(/\n/g, '\n      ')}`),
    );
  }
  return lines.join('\n');
}
