import type tls from 'node:tls';
import { parseErrorFields } from '../raw-auth.js';

/** Shared bookkeeping: the findings every fuzz part records into, and a raw client's answers. */

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

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Keeps every ErrorResponse a raw client receives and whether a marker row or the close came. */
export class ResponseCollector {
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
