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
    // A catalog outage is the server's problem, not a wrong password: say so (57P03), keep the cause for the log.
    const credential = await this.catalog.getCredential(databaseId, username).catch((err: unknown) => {
      throw Object.assign(errors.catalogUnavailable(), { cause: err });
    });
    if (credential) return { known: true, data: credential.scram };
    return { known: false, data: this.mock(databaseId, username) };
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
