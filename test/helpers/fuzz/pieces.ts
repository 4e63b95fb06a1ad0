import fc from 'fast-check';
import { SSL_REQUEST, startupMessage, untagged } from '../raw.js';
import { cstr, i16, i32, type Piece, piece, tagged } from './frontend-messages.js';
import { bytesArb, nameArb, SQL_HOSTILE, SQL_ORDINARY, sqlArb } from './sql.js';

/**
 * Piece arbitraries: valid and invalid frontend messages, and the generated protocol runs built
 * from them (reproducible from seed + index).
 */

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
