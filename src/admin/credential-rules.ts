import { randomBytes } from 'node:crypto';
import { InvalidRequestError } from '../errors.js';

/** The login user a database is created with when none is given. */
export const DEFAULT_USER = 'postgres';

/** Shortest password accepted when one is given (MIN_PASSWORD_LENGTH). */
const DEFAULT_MIN_PASSWORD_LENGTH = 12;
/** Length of generated passwords, unless the minimum is longer. */
const GENERATED_PASSWORD_LENGTH = 24;

/** A login user name as given (the default when none): the one check for create and passwd. */
export function userName(given: string | undefined): string {
  const username = given ?? DEFAULT_USER;
  if (!/^[A-Za-z0-9_.-]{1,63}$/.test(username)) {
    throw new InvalidRequestError('invalid user name: 1-63 letters, digits, "_", "." or "-"');
  }
  return username;
}

/** A random password of `length` base64url characters (24 = 144 bits by default). */
export function generatePassword(length = GENERATED_PASSWORD_LENGTH): string {
  return randomBytes(Math.ceil((length * 3) / 4))
    .toString('base64url')
    .slice(0, length);
}

/**
 * The password to store: `given` when long enough (counted in characters) and sendable by a
 * client, else a 400; a generated one, at least the minimum long, when none is given. The one
 * check behind the admin API and the CLI (create, clone, upload --create, passwd).
 */
export function passwordToStore(given: string | undefined, minLength = DEFAULT_MIN_PASSWORD_LENGTH): string {
  if (given === undefined) return generatePassword(Math.max(GENERATED_PASSWORD_LENGTH, minLength));
  if ([...given].length < minLength) {
    throw new InvalidRequestError(`password must be at least ${minLength} characters long`);
  }
  // No client can send a NUL in a password, and a lone surrogate has no UTF-8 form to hash.
  if (given.includes('\0') || /\p{Cs}/u.test(given)) {
    throw new InvalidRequestError('password must be valid UTF-8 text without NUL characters');
  }
  return given;
}
