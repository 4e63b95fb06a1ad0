import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { ScramSha256Data } from 'pg-gateway';
import type { Logger } from '../log.js';
import type { ScramLookup } from './auth.js';
import type { AuthThrottle } from './auth-throttle.js';

const pbkdf2Async = promisify(pbkdf2);

/** Longest cleartext password checked; anything longer cannot be right and is not hashed. */
export const MAX_PASSWORD_BYTES = 1024;

/** Successful checks remembered at most (about 100 bytes each). */
export const PASSWORD_CHECK_CACHE_ENTRIES = 1000;

/**
 * Successful cleartext checks, least recently used dropped first. `POST /sql` sends the password
 * with every request, and deriving the keys costs 4096 (the verifier's count) PBKDF2 rounds,
 * about a millisecond of CPU per request on a 2-core VM; a hit costs one HMAC (a few µs).
 *
 * An entry is an HMAC, under a per-process secret, of the verifier (salt, iterations, StoredKey)
 * and the password: the check is a pure function of exactly those, so a hit can only repeat an
 * answer that is still right. A changed password has a new salt and StoredKey; a deleted database
 * or user gets mock data with a fresh random StoredKey on every lookup; neither ever matches an old
 * entry. The verifier belongs to one database and user (its salt is random), which scopes the
 * entry to them. Failures are never stored, so every wrong guess pays the full derivation and
 * still goes through the login throttle; the secret keeps the keys from being a fast-hash
 * shortcut to the passwords if memory leaks.
 */
export class PasswordCheckCache {
  private readonly secret = randomBytes(32);
  /** Insertion order is recency: a hit moves its key to the end, eviction takes the first. */
  private readonly entries = new Set<string>();
  private hitCount = 0;
  private missCount = 0;

  constructor(readonly maxEntries = PASSWORD_CHECK_CACHE_ENTRIES) {}

  get size(): number {
    return this.entries.size;
  }
  /** Checks answered from the cache, and checks that had to derive the keys. */
  get hits(): number {
    return this.hitCount;
  }
  get misses(): number {
    return this.missCount;
  }

  key(data: ScramSha256Data, password: string): string {
    return createHmac('sha256', this.secret)
      .update(`${data.salt}\0${data.iterations}\0${data.storedKey}\0`)
      .update(password)
      .digest('base64');
  }

  /** True when this verifier accepted this password before; refreshes the entry's recency. */
  has(key: string): boolean {
    if (!this.entries.delete(key)) {
      this.missCount++;
      return false;
    }
    this.entries.add(key);
    this.hitCount++;
    return true;
  }

  /** Remembers a successful check. */
  add(key: string): void {
    if (this.maxEntries <= 0) return;
    this.entries.delete(key);
    this.entries.add(key);
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.values().next().value as string;
      this.entries.delete(oldest);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}

/** The process's cache, shared by the HTTP (`/sql`) and WebSocket cleartext logins. */
export const passwordChecks = new PasswordCheckCache();

/**
 * Checks a cleartext password against a SCRAM-SHA-256 verifier, as Postgres does for `password`
 * authentication with SCRAM secrets: the salted password is derived from the stored salt and
 * iteration count, and its StoredKey compared with the stored one. The password is not kept; a
 * success is remembered in `cache` (see PasswordCheckCache) so a repeat skips the derivation.
 */
export async function verifyCleartextPassword(
  data: ScramSha256Data,
  password: string,
  /** null checks without remembering (undefined would pick the default). */
  cache: PasswordCheckCache | null = passwordChecks,
): Promise<boolean> {
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return false;
  if (!cache) return deriveAndCompare(data, password);
  const key = cache.key(data, password);
  if (cache.has(key)) return true;
  const ok = await deriveAndCompare(data, password);
  if (ok) cache.add(key);
  return ok;
}

async function deriveAndCompare(data: ScramSha256Data, password: string): Promise<boolean> {
  const salted = await pbkdf2Async(password, Buffer.from(data.salt, 'base64'), data.iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const expected = Buffer.from(data.storedKey, 'base64');
  return expected.length === storedKey.length && timingSafeEqual(expected, storedKey);
}

/**
 * A cleartext login under the login throttle: an unknown database or user is checked against
 * mock data (ScramLookup) so it fails exactly like a wrong password, after the same delays.
 */
export async function checkCleartextLogin(
  deps: { scram: ScramLookup; throttle: AuthThrottle },
  attempt: {
    address: string;
    database: string;
    user: string;
    password: string;
    log: Logger;
    wait: (ms: number) => Promise<void>;
  },
): Promise<string | undefined> {
  let storedKey: string | undefined;
  const ok = await deps.throttle.guard({
    address: attempt.address,
    database: attempt.database,
    log: attempt.log,
    verify: async () => {
      const { data } = await deps.scram.lookup(attempt.database, attempt.user);
      const good = await verifyCleartextPassword(data, attempt.password);
      if (good) storedKey = data.storedKey;
      return good;
    },
    wait: attempt.wait,
  });
  return ok ? storedKey : undefined;
}
