import { isUtf8 } from 'node:buffer';
import { Frontend } from './protocol.js';

const FRONTEND_TYPES: ReadonlySet<number> = new Set(Object.values(Frontend));

/** Whether a message type may be sent by a client after authentication. */
export const isFrontendType = (code: number): boolean => FRONTEND_TYPES.has(code);

/** What is wrong with a frontend message, with the SQLSTATE Postgres gives it. */
export interface FrontendProblem {
  /** 08P01 for a malformed message; 22021 for a statement or portal name that is not UTF-8. */
  readonly sqlstate: '08P01' | '22021';
  readonly message: string;
}

const malformed = (message: string): FrontendProblem => ({ sqlstate: '08P01', message });

/**
 * Structural check of one framed frontend message after authentication, before it can reach the
 * engine. PGlite answers an unknown message type with a FATAL and then loses protocol sync for
 * good, and a malformed message makes it fail in ways Postgres would not; so the gateway refuses
 * both itself (that client only). Statement and portal names must be UTF-8, as Postgres checks
 * them: the pooler renames statements by their decoded names, and two different invalid names
 * would otherwise decode to the same one. Returns what is wrong, or undefined when the message is
 * well formed. Pure: no I/O.
 */
export function frontendProblem(message: Uint8Array): FrontendProblem | undefined {
  const reader = new Reader(message);
  const code = message[0] as number;
  switch (code) {
    case Frontend.Query:
      reader.cstring();
      break;
    case Frontend.Parse: {
      reader.name();
      reader.cstring();
      const types = reader.uint16();
      reader.skip(types * 4);
      break;
    }
    case Frontend.Bind: {
      reader.name();
      reader.name();
      const formats = reader.uint16();
      reader.skip(formats * 2);
      const params = reader.uint16();
      for (let i = 0; i < params && !reader.failed; i++) {
        const length = reader.int32();
        if (length < -1) return malformed('invalid parameter length in Bind message');
        if (length > 0) reader.skip(length);
      }
      const results = reader.uint16();
      reader.skip(results * 2);
      break;
    }
    case Frontend.Describe:
    case Frontend.Close: {
      const kind = reader.byte();
      if (!reader.failed && kind !== 0x53 && kind !== 0x50) {
        return malformed(`invalid ${code === Frontend.Close ? 'CLOSE' : 'DESCRIBE'} message subtype ${kind}`);
      }
      reader.name();
      break;
    }
    case Frontend.Execute:
      reader.name();
      reader.int32();
      break;
    case Frontend.FunctionCall: {
      reader.int32();
      const formats = reader.uint16();
      reader.skip(formats * 2);
      const args = reader.uint16();
      for (let i = 0; i < args && !reader.failed; i++) {
        const length = reader.int32();
        if (length < -1) return malformed('invalid argument length in FunctionCall message');
        if (length > 0) reader.skip(length);
      }
      reader.uint16();
      break;
    }
    case Frontend.CopyData:
      return undefined;
    case Frontend.CopyFail:
      reader.cstring();
      break;
    case Frontend.Sync:
    case Frontend.Flush:
    case Frontend.CopyDone:
    case Frontend.Terminate:
      break;
    default:
      return malformed(`invalid frontend message type ${code}`);
  }
  if (reader.failed || !reader.atEnd) return malformed('invalid message format');
  if (reader.badName)
    return {
      sqlstate: '22021',
      message: 'invalid byte sequence for encoding "UTF8" in a statement or portal name',
    };
  return undefined;
}

/** Reads fields of a message body, remembering whether it ran past the end. */
class Reader {
  private offset = 5;
  failed = false;
  /** A statement or portal name was not valid UTF-8. */
  badName = false;
  private readonly end: number;

  constructor(private readonly message: Uint8Array) {
    // The framer guarantees the declared length matches the bytes; trust only the bytes.
    this.end = message.length;
  }

  get atEnd(): boolean {
    return this.offset === this.end;
  }

  byte(): number {
    if (this.offset + 1 > this.end) return this.fail();
    return this.message[this.offset++] as number;
  }

  /** Counts are unsigned, as Postgres reads them (pq_getmsgint): up to 65,535 parameters. */
  uint16(): number {
    if (this.offset + 2 > this.end) return this.fail();
    const value = ((this.message[this.offset] as number) << 8) | (this.message[this.offset + 1] as number);
    this.offset += 2;
    return value;
  }

  int32(): number {
    if (this.offset + 4 > this.end) return this.fail();
    const m = this.message;
    const o = this.offset;
    const value =
      ((m[o] as number) << 24) |
      ((m[o + 1] as number) << 16) |
      ((m[o + 2] as number) << 8) |
      (m[o + 3] as number);
    this.offset += 4;
    return value;
  }

  skip(n: number): void {
    if (this.failed) return;
    if (this.offset + n > this.end) {
      this.fail();
      return;
    }
    this.offset += n;
  }

  cstring(): void {
    if (this.failed) return;
    const nul = this.message.indexOf(0, this.offset);
    if (nul < 0 || nul >= this.end) {
      this.fail();
      return;
    }
    this.offset = nul + 1;
  }

  /** A statement or portal name: a C string that must be valid UTF-8. */
  name(): void {
    const start = this.offset;
    this.cstring();
    if (!this.failed && this.offset - 1 > start && !isUtf8(this.message.subarray(start, this.offset - 1)))
      this.badName = true;
  }

  private fail(): number {
    this.failed = true;
    this.offset = this.end + 1;
    return 0;
  }
}
