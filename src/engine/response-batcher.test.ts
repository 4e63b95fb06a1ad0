import { describe, expect, it } from 'vitest';
import { tagged } from '../../test/helpers/messages.js';
import { ResponseBatcher, requestShape } from './response-batcher.js';

/** A backend message: code, length, body of `size` bytes filled with `fill`. */
const message = (code: number, size: number, fill: number): Buffer => tagged(code, Buffer.alloc(size, fill));

/** Splits `bytes` into writes of varying sizes, as PGlite's output callback delivers them. */
function writes(bytes: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0, k = 0; i < bytes.length; k++) {
    const n = sizes[k % sizes.length] as number;
    out.push(bytes.subarray(i, i + n));
    i += n;
  }
  return out;
}

/** Whether `bytes` is a sequence of whole messages. */
function wholeMessages(bytes: Buffer): boolean {
  let i = 0;
  while (i + 5 <= bytes.length) i += 1 + bytes.readUInt32BE(i + 1);
  return i === bytes.length;
}

function run(batcher: ResponseBatcher, input: Buffer[]) {
  const posted: Buffer[] = [];
  for (const w of input) {
    // The source is reused after each write, as WASM memory is.
    const scratch = Buffer.from(w);
    batcher.append(scratch, (data, length) => posted.push(Buffer.from(data, 0, length)));
    scratch.fill(0xee);
  }
  const rest = batcher.finish();
  return { posted, rest: Buffer.from(rest.data, 0, rest.length) };
}

describe('ResponseBatcher', () => {
  const rows = Array.from({ length: 400 }, (_, i) => message(0x44, 100 + (i % 37) * 13, i % 251));
  const ready = message(0x5a, 1, 0x49);
  const response = Buffer.concat([...rows, ready]);

  it('posts whole messages once past the threshold and keeps the last write for the end', () => {
    for (const sizes of [[3, 1, 500], [7, 8192, 3], [4096], [response.length]]) {
      const { posted, rest } = run(new ResponseBatcher(16 * 1024), writes(response, sizes));
      // Buffer.equals: a deep toEqual over ~100 KB takes seconds.
      expect(Buffer.concat([...posted, rest]).equals(response)).toBe(true);
      for (const p of posted) {
        expect(wholeMessages(p)).toBe(true);
        expect(p.length).toBeGreaterThanOrEqual(16 * 1024);
      }
      expect(rest.subarray(rest.length - ready.length).equals(ready)).toBe(true);
      if (sizes[0] !== response.length) expect(posted.length).toBeGreaterThan(1);
    }
  });

  it('keeps a small response whole and is reusable afterwards', () => {
    const batcher = new ResponseBatcher(16 * 1024);
    const small = Buffer.concat([message(0x43, 8, 1), ready]);
    for (let i = 0; i < 3; i++) {
      const { posted, rest } = run(batcher, writes(small, [3]));
      expect(posted).toEqual([]);
      expect(rest).toEqual(small);
    }
    const { rest } = run(batcher, [response]);
    expect(rest.equals(response)).toBe(true);
    expect(run(batcher, [small]).rest).toEqual(small);
  });

  it('holds a message larger than the threshold until it is complete', () => {
    const big = message(0x44, 100_000, 7);
    const input = [...writes(Buffer.concat([big, big]), [5000]), ready];
    const { posted, rest } = run(new ResponseBatcher(1024), input);
    expect(posted.map((p) => p.length)).toEqual([big.length, big.length]);
    expect(rest).toEqual(ready);
  });
});

describe('a FATAL from the engine', () => {
  const fatal = (text: string) => tagged('E', `SFATAL\0VFATAL\0C08P01\0M${text}\0\0`);

  it('is noticed however the output is split, and cut off with everything after it', () => {
    const before = message(0x44, 40, 1);
    const all = Buffer.concat([
      before,
      fatal('invalid frontend message type 56'),
      fatal('lost sync'),
      before,
    ]);
    for (let at = 1; at < all.length; at++) {
      const batcher = new ResponseBatcher(1 << 20);
      const posted: Buffer[] = [];
      const post = (data: ArrayBuffer, length: number) => posted.push(Buffer.from(data, 0, length));
      batcher.append(all.subarray(0, at), post);
      batcher.append(all.subarray(at), post);
      expect(batcher.fatal).toBe('08P01 invalid frontend message type 56');
      const rest = batcher.finish();
      expect(Buffer.concat([...posted, Buffer.from(rest.data, 0, rest.length)])).toEqual(before);
      expect(batcher.fatal).toBeUndefined();
    }
  });

  it('an ERROR is not a FATAL', () => {
    const m = tagged('E', 'SERROR\0C42P01\0Mnope\0\0');
    const batcher = new ResponseBatcher(1 << 20);
    batcher.append(m, () => undefined);
    expect(batcher.fatal).toBeUndefined();
  });

  it('takes the warnings and errors of a corrupt engine as a FATAL, and nothing like them', () => {
    /** A notice or error with the fields Postgres sends: severity, code, message, source file. */
    const report = (type: 'N' | 'E', severity: string, code: string, text: string, file: string) =>
      tagged(type, `S${severity}\0V${severity}\0C${code}\0M${text}\0F${file}\0L1\0Rf\0\0`);
    const reason = (m: Buffer) => {
      const batcher = new ResponseBatcher(1 << 20);
      batcher.append(Buffer.concat([message(0x31, 0, 0), m, message(0x5a, 1, 0x49)]), () => undefined);
      const why = batcher.fatal;
      const rest = batcher.finish();
      // Cut just before the sign: what came earlier stays, the ReadyForQuery after it goes.
      if (why !== undefined) expect(rest.length).toBe(5);
      return why;
    };
    expect(reason(report('N', 'WARNING', '01000', 'snapshot 0x2a5f10 still active', 'snapmgr.c'))).toBe(
      'engine state corrupted: snapshot 0x2a5f10 still active',
    );
    expect(
      reason(report('N', 'WARNING', '01000', 'relcache reference leak: relation "t"', 'relcache.c')),
    ).toMatch(/corrupted/);
    expect(
      reason(report('N', 'WARNING', '01000', 'resource was not closed: buffer 12', 'resowner.c')),
    ).toMatch(/corrupted/);
    expect(reason(report('E', 'ERROR', 'XX000', 'bad buffer ID: 0', 'bufmgr.c'))).toBe(
      'engine state corrupted: bad buffer ID: 0',
    );
    // The same texts from a user's RAISE (pl_exec.c), or in data a trigger echoes, are not signs.
    expect(reason(report('N', 'WARNING', '01000', 'snapshot 0x1 still active', 'pl_exec.c'))).toBeUndefined();
    expect(
      reason(report('N', 'WARNING', '01000', 'invalid value: a reference leak', 'pl_exec.c')),
    ).toBeUndefined();
    expect(reason(report('E', 'ERROR', 'XX000', 'bad buffer ID: 0', 'pl_exec.c'))).toBeUndefined();
    expect(
      reason(report('N', 'WARNING', '01000', 'there is no transaction in progress', 'xact.c')),
    ).toBeUndefined();
    expect(reason(report('N', 'NOTICE', '00000', 'snapshot 0x1 still active', 'snapmgr.c'))).toBeUndefined();
    expect(reason(report('E', 'ERROR', 'XX000', 'could not read block 0', 'bufmgr.c'))).toBeUndefined();
  });

  it('knows when Binds of a synced request were neither completed nor refused', () => {
    const unit = (...codes: string[]) => Buffer.concat(codes.map((c) => tagged(c, Buffer.alloc(3))));
    expect(requestShape(unit('P', 'B', 'E', 'B', 'E', 'S'))).toEqual({ binds: 2, endsUnit: true });
    // Not synced: answers may come later.
    expect(requestShape(unit('P', 'B', 'E', 'H'))).toEqual({ binds: 0, endsUnit: false });
    expect(requestShape(unit('Q'))).toEqual({ binds: 0, endsUnit: true });
    const answered = (codes: string[], binds: number) => {
      const batcher = new ResponseBatcher(1 << 20);
      batcher.append(unit(...codes), () => undefined);
      const result = batcher.unansweredBinds(binds);
      batcher.finish();
      return result;
    };
    expect(answered(['1', '2', 'C', 'Z'], 1)).toBe(false);
    expect(answered(['1', 'E', 'Z'], 1)).toBe(false); // refused: an error answers it
    expect(answered(['1', 'n', 'I', 'Z'], 1)).toBe(true); // what the corrupt engine sent
    expect(answered(['Z'], 0)).toBe(false);
  });
});
