import { Frontend } from '../gateway/protocol.js';

/**
 * Named prepared statements of one client, renamed so clients sharing one Postgres session can
 * all prepare "P_0". Backend names are short (`_g<client>_<n>`) so Postgres' 63-byte name limit
 * never makes two of them collide. Least recently used statements beyond the cap are closed, as
 * PgBouncer's max_prepared_statements does.
 */
export class StatementNames {
  private readonly toBackend = new Map<string, string>();
  private readonly toClient = new Map<string, string>();
  private readonly evicted: string[] = [];
  /** The renamed Parse of each statement, to create them again after the database restarted. */
  private readonly parses = new Map<string, Buffer>();
  private sequence = 0;
  private readonly prefix: string;
  private readonly missing: string;

  constructor(
    clientId: number,
    private readonly cap: number,
  ) {
    this.prefix = `_g${clientId}_`;
    this.missing = `${this.prefix}missing`;
  }

  get size(): number {
    return this.toBackend.size;
  }

  /** Backend names of every statement this client has (for closing them on disconnect). */
  backendNames(): string[] {
    return [...this.toBackend.values(), ...this.takeEvicted()];
  }

  /** Statements pushed out by the cap, to be closed at the next unit boundary. */
  takeEvicted(): string[] {
    return this.evicted.splice(0);
  }

  forgetAll(): void {
    this.toBackend.clear();
    this.toClient.clear();
    this.parses.clear();
  }

  recordParse(backend: string, parse: Buffer): void {
    if (this.toClient.has(backend)) this.parses.set(backend, parse);
  }

  /** Parse messages that re-create every statement this client has. */
  parseMessages(): Buffer[] {
    return [...this.parses.values()];
  }

  /** A name being defined by Parse: allocates a backend name (reusing an existing one). */
  define(name: string): string {
    if (name === '') return '';
    const existing = this.touch(name);
    if (existing) return existing;
    const backend = `${this.prefix}${this.sequence++}`;
    this.toBackend.set(name, backend);
    this.toClient.set(backend, name);
    if (this.toBackend.size > this.cap) {
      const [oldest] = this.toBackend.keys();
      if (oldest !== undefined) this.drop(oldest, true);
    }
    return backend;
  }

  /** A name being used (Bind, Describe): unknown names map to a name that does not exist. */
  use(name: string): string {
    if (name === '') return '';
    const backend = this.touch(name);
    if (backend) return backend;
    this.toClient.set(this.missing, name);
    return this.missing;
  }

  /** A name being closed: it is forgotten whether or not the Close succeeds (Postgres agrees). */
  close(name: string): string {
    if (name === '') return '';
    const backend = this.use(name);
    if (backend !== this.missing) this.drop(name, false);
    return backend;
  }

  /** Replaces backend names in a text (error messages) by the client's own names. */
  restore(text: string): string {
    if (!text.includes(this.prefix)) return text;
    return text.replace(new RegExp(`${this.prefix}(?:\\d+|missing)`, 'g'), (m) => this.toClient.get(m) ?? m);
  }

  private touch(name: string): string | undefined {
    const backend = this.toBackend.get(name);
    if (backend === undefined) return undefined;
    // Map order is insertion order: re-inserting makes it the most recently used.
    this.toBackend.delete(name);
    this.toBackend.set(name, backend);
    return backend;
  }

  private drop(name: string, evict: boolean): void {
    const backend = this.toBackend.get(name);
    if (backend === undefined) return;
    this.toBackend.delete(name);
    this.toClient.delete(backend);
    this.parses.delete(backend);
    if (evict) this.evicted.push(backend);
  }
}

const cstring = (buf: Buffer, start: number): { value: string; end: number } => {
  const end = buf.indexOf(0, start);
  if (end < 0) throw new RangeError('unterminated string in message');
  return { value: buf.toString('utf8', start, end), end };
};

function build(code: number, parts: (Buffer | string)[]): Buffer {
  const body = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = code;
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/** Rewrites the statement name in Parse/Bind/Describe/Close; other messages pass unchanged. */
export function renameStatement(message: Buffer, names: StatementNames): Buffer {
  switch (message[0]) {
    case Frontend.Parse: {
      const name = cstring(message, 5);
      if (name.value === '') return message;
      const backend = names.define(name.value);
      const renamed = build(Frontend.Parse, [`${backend}\0`, message.subarray(name.end + 1)]);
      names.recordParse(backend, renamed);
      return renamed;
    }
    case Frontend.Bind: {
      const portal = cstring(message, 5);
      const statement = cstring(message, portal.end + 1);
      if (statement.value === '') return message;
      return build(Frontend.Bind, [
        message.subarray(5, portal.end + 1),
        `${names.use(statement.value)}\0`,
        message.subarray(statement.end + 1),
      ]);
    }
    case Frontend.Describe:
    case Frontend.Close: {
      if (message[5] !== 0x53) return message; // 'S' statement; portals are not renamed
      const name = cstring(message, 6);
      if (name.value === '') return message;
      const backend = message[0] === Frontend.Close ? names.close(name.value) : names.use(name.value);
      return build(message[0], ['S', `${backend}\0`]);
    }
    default:
      return message;
  }
}

/** Close('S', name) messages for backend statement names, followed by Sync. */
export function closeStatements(backendNames: string[]): Buffer {
  return Buffer.concat([
    ...backendNames.map((n) => build(Frontend.Close, ['S', `${n}\0`])),
    build(Frontend.Sync, []),
  ]);
}

/** Rewrites ErrorResponse/NoticeResponse fields that mention backend statement names. */
export function restoreNames(response: Uint8Array, names: StatementNames): Uint8Array {
  const buf = Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  let out: Buffer[] | undefined;
  let copied = 0;
  let i = 0;
  while (i + 5 <= buf.length) {
    const end = i + 1 + buf.readUInt32BE(i + 1);
    const code = buf[i];
    if ((code === 0x45 || code === 0x4e) && buf.indexOf('_g', i) < end) {
      const fields = buf.toString('utf8', i + 5, end - 1);
      const restored = fields
        .split('\0')
        .map((f) => names.restore(f))
        .join('\0');
      if (restored !== fields) {
        out ??= [];
        out.push(buf.subarray(copied, i), build(code, [restored, Buffer.from([0])]));
        copied = end;
      }
    }
    i = end;
  }
  if (!out) return response;
  out.push(buf.subarray(copied));
  return Buffer.concat(out);
}
