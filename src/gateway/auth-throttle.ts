import { isIPv6 } from 'node:net';
import type { Logger } from '../log.js';

/**
 * Brute-force protection for password authentication. Failed logins are counted per source
 * address (IPv6 per /64, the block one host usually owns) and per requested database id, whether
 * or not that database exists: the throttle never looks at the catalog, so an unknown database or
 * user is treated exactly like a wrong password.
 *
 * Once an address or a database has `threshold` failures, every further attempt on it waits
 * before its answer, success or failure alike (so giving up early teaches nothing): `baseDelayMs`,
 * doubling with each further failure, at most `maxDelayMs`. Concurrent attempts on one key queue
 * behind each other, so opening many connections does not multiply the guessing rate; when the
 * queue reaches `queueMs` ahead, an attempt still waits its delay but is refused without its
 * password being checked. A success resets its address's count (not the database's, or a user
 * logging in would wipe an attacker's record); failures are forgotten once `windowMs` passes
 * without another. Memory is bounded: at most `maxEntries` addresses and as many databases are
 * tracked, the least recently failed dropped first; stale entries are swept as others are touched.
 * No timer is kept here; the per-attempt wait belongs to the connection (`waitUnlessClosed`).
 */

export interface AuthThrottleOptions {
  /** Failures on one address or database before its attempts are delayed (AUTH_FAIL_THRESHOLD). Default 5. */
  threshold?: number;
  /** Failures are forgotten once this long passes without another (AUTH_FAIL_WINDOW). Default 5 min. */
  windowMs?: number;
  /** Delay of the first throttled attempt, doubled per further failure (AUTH_BASE_DELAY). Default 250 ms. */
  baseDelayMs?: number;
  /** Longest delay of one attempt; 0 turns throttling off (AUTH_MAX_DELAY). Default 10 s. */
  maxDelayMs?: number;
  /** How far ahead answers may be queued per key (never below maxDelayMs). Default 60 s (LOGIN_TIMEOUT). */
  queueMs?: number;
  /** Addresses, and separately databases, tracked at most. Default 10,000 each. */
  maxEntries?: number;
  /** At most one "authentication throttled" log line per this interval. Default 10 s. */
  logIntervalMs?: number;
  /** Clock in milliseconds; injectable for tests. Default `Date.now`. */
  now?: () => number;
}

/** What the throttle decided for one attempt. */
export interface Admission {
  /** Wait this long before answering, whatever the answer. */
  delayMs: number;
  /** False when the queue is full: refuse (28P01) without checking the password. */
  verify: boolean;
}

export type AttemptResult = 'ok' | 'failed' | 'unchecked';

interface Entry {
  failures: number;
  lastFailureAt: number;
  /** When the last queued answer on this key is due. */
  nextAt: number;
}

/** Entries that a single touch may sweep, so one call never walks the whole table. */
const SWEEP_PER_TOUCH = 8;

/** A Map kept in least-recently-touched order, capped at `max` entries. */
class KeyTable {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The live entry for `key`; a stale one is dropped. */
  get(key: string, now: number): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry && this.stale(entry, now)) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Stores `entry` as the most recently touched, sweeping stale entries and evicting past the cap. */
  touch(key: string, entry: Entry, now: number): void {
    this.entries.delete(key);
    this.entries.set(key, entry);
    let swept = 0;
    for (const [oldest, value] of this.entries) {
      const over = this.entries.size > this.max;
      if (!over && (swept >= SWEEP_PER_TOUCH || !this.stale(value, now))) break;
      this.entries.delete(oldest);
      swept++;
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  private stale(entry: Entry, now: number): boolean {
    return now - entry.lastFailureAt >= this.windowMs && entry.nextAt <= now;
  }
}

export class AuthThrottle {
  private readonly threshold: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly queueMs: number;
  private readonly logIntervalMs: number;
  private readonly now: () => number;
  private readonly addresses: KeyTable;
  private readonly databases: KeyTable;
  private failureCount = 0;
  private throttledCount = 0;
  private lastLogAt = Number.NEGATIVE_INFINITY;
  private unlogged = 0;

  constructor(opts: AuthThrottleOptions = {}) {
    this.threshold = Math.max(1, opts.threshold ?? 5);
    this.baseDelayMs = Math.max(0, opts.baseDelayMs ?? 250);
    this.maxDelayMs = Math.max(0, opts.maxDelayMs ?? 10_000);
    this.queueMs = Math.max(this.maxDelayMs, opts.queueMs ?? 60_000);
    this.logIntervalMs = opts.logIntervalMs ?? 10_000;
    this.now = opts.now ?? Date.now;
    const windowMs = opts.windowMs ?? 5 * 60_000;
    const maxEntries = Math.max(1, opts.maxEntries ?? 10_000);
    this.addresses = new KeyTable(maxEntries, windowMs);
    this.databases = new KeyTable(maxEntries, windowMs);
  }

  /** Totals since start, for metrics: failed logins (28P01 answers) and delayed attempts. */
  get counts(): { readonly failures: number; readonly throttled: number } {
    return { failures: this.failureCount, throttled: this.throttledCount };
  }

  /** Tracked keys, for tests and diagnostics. */
  get size(): { addresses: number; databases: number } {
    return { addresses: this.addresses.size, databases: this.databases.size };
  }

  /** The delay an attempt gets after `failures` recent failures on its key. */
  delayAfter(failures: number): number {
    if (failures < this.threshold || this.maxDelayMs === 0 || this.baseDelayMs === 0) return 0;
    // The exponent is capped so the product stays finite (0 × Infinity would be NaN).
    return Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(failures - this.threshold, 64));
  }

  /** Decides one attempt that is about to be answered; reserves its place in the queues. */
  admit(address: string, database: string): Admission {
    const now = this.now();
    const queued: { table: KeyTable; key: string; entry: Entry; slot: number }[] = [];
    let answerAt = now;
    let delayMs = 0;
    for (const [table, key] of this.keys(address, database)) {
      const entry = table.get(key, now);
      const delay = entry ? this.delayAfter(entry.failures) : 0;
      if (!entry || delay === 0) continue;
      const slot = Math.max(now, entry.nextAt) + delay;
      queued.push({ table, key, entry, slot });
      answerAt = Math.max(answerAt, slot);
      delayMs = Math.max(delayMs, delay);
    }
    if (queued.length === 0) return { delayMs: 0, verify: true };
    this.throttledCount++;
    if (answerAt - now > this.queueMs) return { delayMs, verify: false };
    for (const { table, key, entry, slot } of queued) {
      entry.nextAt = slot;
      table.touch(key, entry, now);
    }
    return { delayMs: answerAt - now, verify: true };
  }

  /** Records an attempt's outcome (`unchecked`: refused by `admit` without a password check). */
  record(address: string, database: string, result: AttemptResult): void {
    if (result === 'ok') {
      this.addresses.delete(addressKey(address));
      return;
    }
    this.failureCount++;
    if (result === 'unchecked') return;
    const now = this.now();
    for (const [table, key] of this.keys(address, database)) {
      const entry = table.get(key, now) ?? { failures: 0, lastFailureAt: now, nextAt: 0 };
      entry.failures++;
      entry.lastFailureAt = now;
      table.touch(key, entry, now);
    }
  }

  /**
   * Rate limit for the "authentication throttled" line: returns how many throttled attempts went
   * unlogged before this one when a line may be written now, otherwise undefined.
   */
  logSlot(): number | undefined {
    const now = this.now();
    if (now - this.lastLogAt < this.logIntervalMs) {
      this.unlogged++;
      return undefined;
    }
    this.lastLogAt = now;
    const skipped = this.unlogged;
    this.unlogged = 0;
    return skipped;
  }

  /**
   * One password check under the throttle: admit, verify (unless refused unchecked), record, log,
   * then wait the delay before the caller reveals the answer. Failed logins are logged at info;
   * throttled attempts at warn, rate-limited (`logSlot`). Resolves to whether the password was right.
   */
  async guard(attempt: {
    address: string;
    database: string;
    log: Logger;
    verify: () => Promise<boolean>;
    wait: (ms: number) => Promise<void>;
  }): Promise<boolean> {
    const { address, database, log } = attempt;
    const admission = this.admit(address, database);
    const ok = admission.verify && (await attempt.verify());
    this.record(address, database, ok ? 'ok' : admission.verify ? 'failed' : 'unchecked');
    if (admission.verify && !ok) log.info({ address }, 'authentication failed');
    if (admission.delayMs > 0) {
      const skipped = this.logSlot();
      if (skipped !== undefined) {
        log.warn(
          { address, delayMs: admission.delayMs, checked: admission.verify, skipped },
          'authentication throttled',
        );
      }
      await attempt.wait(admission.delayMs);
    }
    return ok;
  }

  private keys(address: string, database: string): [KeyTable, string][] {
    return [
      [this.addresses, addressKey(address)],
      [this.databases, database],
    ];
  }
}

/** The key an address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped?.[1]) return mapped[1];
  const bare = address.split('%')[0] ?? '';
  if (!isIPv6(bare)) return address;
  const [head = '', tail] = bare.split('::');
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  // A trailing dotted IPv4 part stands for two groups.
  const width = (g: string[]) => g.reduce((n, x) => n + (x.includes('.') ? 2 : 1), 0);
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const zeros = tail === undefined ? 0 : 8 - width(front) - width(back);
  const full = [...front, ...Array<string>(zeros).fill('0'), ...back];
  const prefix = full.slice(0, 4).map((g) => Number.parseInt(g, 16).toString(16));
  return `${prefix.join(':')}::/64`;
}

/** Resolves after `ms`, or as soon as `socket` closes; the timer is unref'd and always cleared. */
export function waitUnlessClosed(
  ms: number,
  socket: { once(event: 'close', fn: () => void): unknown; off(event: 'close', fn: () => void): unknown },
): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    socket.once('close', done);
  });
}
