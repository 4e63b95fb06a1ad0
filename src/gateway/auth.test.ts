import type { ScramSha256Data } from 'pg-gateway';
import { describe, expect, it } from 'vitest';
import type { CredentialRecord } from '../catalog/catalog.js';
import { ScramLookup } from './auth.js';

const scram: ScramSha256Data = {
  salt: 'c2FsdA==',
  iterations: 4096,
  storedKey: 'stored',
  serverKey: 'server',
};

/** A catalog holding one credential, that fails like Postgres on a NUL in a name. */
function catalog(stored: ScramSha256Data | undefined) {
  const calls: string[] = [];
  return {
    calls,
    async getCredential(databaseId: string, username: string): Promise<CredentialRecord | undefined> {
      calls.push(`${databaseId}/${username}`);
      if (`${databaseId}${username}`.includes('\0'))
        throw new Error('invalid byte sequence for encoding "UTF8": 0x00');
      return stored && databaseId === 'db' && username === 'u'
        ? { databaseId, username, scram: stored }
        : undefined;
    },
  };
}

describe('ScramLookup', () => {
  it('answers a name with a NUL like an unknown user, without asking the catalog', async () => {
    const c = catalog(scram);
    const lookup = new ScramLookup(c);
    expect((await lookup.lookup('db', 'u\0')).known).toBe(false);
    expect(await lookup.stillCurrent('db', 'u\0', 'stored')).toBe(false);
    expect(c.calls).toEqual([]);
    expect(await lookup.lookup('db', 'u')).toEqual({ known: true, data: scram });
  });

  it("tells whether the verifier a client logged in with is still the database's", async () => {
    const lookup = new ScramLookup(catalog(scram));
    expect(await lookup.stillCurrent('db', 'u', 'stored')).toBe(true);
    // Re-created: a new salt and StoredKey.
    expect(await lookup.stillCurrent('db', 'u', 'an older one')).toBe(false);
    expect(await new ScramLookup(catalog(undefined)).stillCurrent('db', 'u', 'stored')).toBe(false);
  });
});
