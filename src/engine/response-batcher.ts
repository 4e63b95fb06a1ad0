import { readErrorFields } from '../wire/protocol.js';

/**
 * Gathers the backend bytes PGlite writes during one request into transferable batches of whole
 * messages, so a large result leaves the worker while the statement still runs and each byte is
 * copied once on its way out of WASM memory.
 *
 * A batch is handed off (`post`) only when more output arrives after it reached `flushBytes`, so
 * the last write of a request (which carries the final ReadyForQuery) always ends up in
 * `finish()`: callers read the transaction status from the final part alone.
 */

const INITIAL_BYTES = 16 * 1024;

export type PostBatch = (data: ArrayBuffer, length: number) => void;

export class ResponseBatcher {
  private buf = new Uint8Array(INITIAL_BYTES);
  private view = new DataView(this.buf.buffer);
  private used = 0;
  /** Bytes at the start of `buf` that form whole messages. */
  private whole = 0;

  constructor(private readonly flushBytes: number) {}

  /** Adds output (a view that may be reused afterwards, e.g. into WASM memory). */
  append(data: Uint8Array, post: PostBatch): void {
    if (data.length === 0 || this.fatal !== undefined) return;
    if (this.whole >= this.flushBytes) this.flush(post);
    this.reserve(data.length);
    this.buf.set(data, this.used);
    this.used += data.length;
    this.scan();
  }

  /** Bytes not yet posted. */
  get pending(): number {
    return this.used;
  }

  /**
   * Everything not yet posted, as a view valid until the next append (the caller copies it);
   * the batcher is empty afterwards. Saves finish()'s copy for small answers.
   */
  take(): Uint8Array {
    const view = this.buf.subarray(0, this.used);
    this.fatal = undefined;
    this.binds = 0;
    this.errors = 0;
    this.used = 0;
    this.whole = 0;
    // A buffer that grew for a big answer is not kept (the view still holds it until copied).
    if (this.buf.length > INITIAL_BYTES) this.replace(new Uint8Array(INITIAL_BYTES));
    return view;
  }

  /** Everything not yet posted; the batcher is empty and reusable afterwards. */
  finish(): { data: ArrayBuffer; length: number } {
    this.fatal = undefined;
    this.binds = 0;
    this.errors = 0;
    const length = this.used;
    this.used = 0;
    this.whole = 0;
    // A small answer is copied out so the buffer serves the next request; a big one is handed over.
    if (length * 4 <= this.buf.length && this.buf.length === INITIAL_BYTES) {
      return { data: this.buf.slice(0, length).buffer, length };
    }
    const data = this.buf.buffer;
    this.replace(new Uint8Array(INITIAL_BYTES));
    return { data, length };
  }

  private flush(post: PostBatch): void {
    const full = this.buf;
    const length = this.whole;
    const tail = full.subarray(length, this.used);
    // A request that filled one batch is likely to fill more: size the next to avoid regrowing.
    const next = new Uint8Array(Math.max(this.flushBytes + (this.flushBytes >> 1), tail.length * 2));
    next.set(tail);
    this.used = tail.length;
    this.whole = 0;
    this.replace(next);
    this.scan();
    post(full.buffer, length);
  }

  private reserve(more: number): void {
    const needed = this.used + more;
    if (needed <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, needed));
    next.set(this.buf.subarray(0, this.used));
    this.replace(next);
  }

  private replace(buf: Uint8Array<ArrayBuffer>): void {
    this.buf = buf;
    this.view = new DataView(buf.buffer);
  }

  /**
   * The text of a FATAL/PANIC ErrorResponse seen in the output, if any. PGlite has one session:
   * after a FATAL it is broken (it may repeat the error forever), so the output is cut just
   * before it and the engine must be restarted. Cleared by `finish`.
   */
  fatal: string | undefined;

  /** BindComplete and ErrorResponse messages seen since the last `finish` (see unansweredBinds). */
  private binds = 0;
  private errors = 0;

  /**
   * Whether a request of `expected` Binds ending in Sync (bindsToAnswer) got a reply that neither
   * completed every Bind nor reported an error: Postgres never answers so, a corrupt engine does
   * (it even when a client turned its warnings off with client_min_messages). Check before finish.
   */
  unansweredBinds(expected: number): boolean {
    return expected > this.binds && this.errors === 0;
  }

  /** Whether an ErrorResponse was seen since the last `finish`. */
  get sawError(): boolean {
    return this.errors > 0;
  }

  private scan(): void {
    while (this.whole + 5 <= this.used && this.fatal === undefined) {
      const length = this.view.getUint32(this.whole + 1);
      const end = this.whole + 1 + length;
      if (length < 4) {
        this.fatal = `malformed backend message (length ${length})`;
      } else if (end > this.used) {
        return;
      } else {
        const code = this.buf[this.whole];
        if (code === 0x32) this.binds++;
        else if (code === 0x45) this.errors++;
        const reason =
          code === 0x45 || code === 0x4e ? breakReason(this.buf.subarray(this.whole, end)) : undefined;
        if (reason === undefined) {
          this.whole = end;
          continue;
        }
        this.fatal = reason;
      }
      this.used = this.whole; // drop the FATAL and whatever follows it
    }
  }
}

const SEVERITY_FATAL = Buffer.from('SFATAL\0');
const SEVERITY_PANIC = Buffer.from('SPANIC\0');

const SEVERITY_WARNING = Buffer.from('SWARNING\0');

/** Why a NoticeResponse or ErrorResponse (whole message) means the engine must be restarted. */
function breakReason(message: Uint8Array): string | undefined {
  // The localized severity comes first; checking its bytes keeps the common case cheap.
  const head = (n: number) =>
    Buffer.from(message.buffer, message.byteOffset + 5, Math.min(message.length - 5, n));
  if (message[0] === 0x45) {
    if (head(7).equals(SEVERITY_FATAL) || head(7).equals(SEVERITY_PANIC)) {
      const fields = readErrorFields(message);
      return `${fields.get('C') ?? ''} ${fields.get('M') ?? ''}`;
    }
  } else if (!head(9).equals(SEVERITY_WARNING)) {
    // Most notices are NOTICE or INFO (RAISE NOTICE in a loop): only a WARNING is read further.
    return undefined;
  }
  return corruptionSign(readErrorFields(message));
}

/**
 * Messages that in Postgres only follow a bug and here follow a WASM stack overflow that PGlite
 * caught as an ordinary error (a deeply nested expression in a Parse): its state is then corrupt.
 * The statement may have been reported done while nothing was written, and the next one may spin
 * for ever. Each is answered as a FATAL is: the engine is restarted. Returns the reason, if any.
 * The source file Postgres names (field F) must be the one that raises it: a user's RAISE WARNING
 * or RAISE ... ERRCODE 'XX000' with the same text comes from pl_exec.c and is left alone.
 */
function corruptionSign(fields: Map<string, string>): string | undefined {
  const message = fields.get('M') ?? '';
  const file = fields.get('F') ?? '';
  const leak = fields.get('V') === 'WARNING' && LEAK_FILES.has(file) && LEAK_WARNING.test(message);
  const internal = fields.get('C') === 'XX000' && BUFFER_FILES.has(file) && INTERNAL_CORRUPTION.test(message);
  return leak || internal ? `engine state corrupted: ${message}` : undefined;
}

/** Resource-owner warnings at the end of a transaction, and the files that raise them. */
const LEAK_WARNING =
  /^(snapshot \S+ still active|\S.* reference leak\b|buffer refcount leak\b|resource was not closed\b)/;
const LEAK_FILES = new Set([
  'snapmgr.c',
  'resowner.c',
  'bufmgr.c',
  'localbuf.c',
  'relcache.c',
  'catcache.c',
  'plancache.c',
  'tupdesc.c',
]);
/** Internal errors that mean the shared buffers' bookkeeping is lost. */
const INTERNAL_CORRUPTION = /^bad buffer ID\b/;
const BUFFER_FILES = new Set(['bufmgr.c', 'localbuf.c']);

/**
 * What a request asks of the engine: `binds`, the Binds every one of which must be answered (those
 * of a request ending in Sync; 0 otherwise), and whether it ends a unit (Sync or a simple Query),
 * after which the engine no longer skips messages for an earlier error.
 */
export function requestShape(request: Uint8Array): { binds: number; endsUnit: boolean } {
  const view = new DataView(request.buffer, request.byteOffset, request.byteLength);
  let binds = 0;
  let last = 0;
  for (let i = 0; i + 5 <= request.length; i += 1 + view.getUint32(i + 1)) {
    last = request[i] as number;
    if (last === 0x42) binds++;
  }
  return { binds: last === 0x53 ? binds : 0, endsUnit: last === 0x53 || last === 0x51 };
}
