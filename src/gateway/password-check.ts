import { createHash, createHmac, pbkdf2, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { ScramSha256Data } from 'pg-gateway';
import type { Logger } from '../log.js';
import type { ScramLookup } from './auth.js';
import type { AuthThrottle } from './auth-throttle.js';

const pbkdf2Async = promisify(pbkdf2);

/** Longest cleartext password checked; anything longer cannot be right and is not hashed. */
export const MAX_PASSWORD_BYTES = 1024;

/**
 * Checks a cleartext password against a SCRAM-SHA-256 verifier, as Postgres does for `password`
 * authentication with SCRAM secrets: the salted password is derived from the stored salt and
 * iteration count, and its StoredKey compared with the stored one. Nothing is kept.
 */
export async function verifyCleartextPassword(data: ScramSha256Data, password: string): Promise<boolean> {
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return false;
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
): Promise<boolean> {
  return deps.throttle.guard({
    address: attempt.address,
    database: attempt.database,
    log: attempt.log,
    verify: async () => {
      const { data } = await deps.scram.lookup(attempt.database, attempt.user);
      return verifyCleartextPassword(data, attempt.password);
    },
    wait: attempt.wait,
  });
}
