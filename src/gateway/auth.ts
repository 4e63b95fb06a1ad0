import { createHmac, randomBytes } from 'node:crypto';
import type { ScramSha256Data } from 'pg-gateway';
import type { Catalog } from '../catalog/catalog.js';
import { errors } from '../errors.js';

/**
 * SCRAM verifier lookup. An unknown database or user gets mock SCRAM data, derived from a
 * per-process secret so repeated attempts see a stable salt: the exchange then fails exactly like
 * a wrong password, and nobody can probe which databases or users exist.
 */
export class ScramLookup {
  private readonly mockSecret = randomBytes(32);

  constructor(private readonly catalog: Pick<Catalog, 'getCredential'>) {}

  /** Returns the stored verifier, or `{ known: false }` with mock data that never verifies. */
  async lookup(databaseId: string, username: string): Promise<{ known: boolean; data: ScramSha256Data }> {
    // No stored name holds a NUL, and the catalog would refuse it (an error read as an outage).
    if (databaseId.includes('\0') || username.includes('\0'))
      return { known: false, data: this.mock(databaseId, username) };
    // A catalog outage is the server's problem, not a wrong password: say so (57P03), keep the cause for the log.
    const credential = await this.catalog.getCredential(databaseId, username).catch((err: unknown) => {
      throw Object.assign(errors.catalogUnavailable(), { cause: err });
    });
    if (credential) return { known: true, data: credential.scram };
    return { known: false, data: this.mock(databaseId, username) };
  }

  /**
   * Whether the verifier a client logged in with (its StoredKey) is still the database's. A
   * database deleted and created again under the same id has new verifiers (a new random salt),
   * so a login that raced that must not reach the new database: checked once the session's
   * database is open, after which deleting it ends the session.
   */
  async stillCurrent(databaseId: string, username: string, storedKey: string): Promise<boolean> {
    if (databaseId.includes('\0') || username.includes('\0')) return false;
    const credential = await this.catalog.getCredential(databaseId, username).catch((err: unknown) => {
      throw Object.assign(errors.catalogUnavailable(), { cause: err });
    });
    return credential?.scram.storedKey === storedKey;
  }

  private mock(databaseId: string, username: string): ScramSha256Data {
    const salt = createHmac('sha256', this.mockSecret)
      .update(`${databaseId}\0${username}`)
      .digest()
      .subarray(0, 16);
    return {
      salt: salt.toString('base64'),
      iterations: 4096,
      storedKey: randomBytes(32).toString('base64'),
      serverKey: randomBytes(32).toString('base64'),
    };
  }
}
