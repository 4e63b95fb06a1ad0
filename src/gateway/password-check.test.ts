import { createScramSha256Data } from 'pg-gateway';
import { describe, expect, it } from 'vitest';
import { PasswordCheckCache, passwordChecks, verifyCleartextPassword } from './password-check.js';

describe('verifyCleartextPassword with a PasswordCheckCache', () => {
  it('remembers a success and answers the repeat without deriving the keys again', async () => {
    const cache = new PasswordCheckCache();
    const data = await createScramSha256Data('right horse');
    expect(await verifyCleartextPassword(data, 'right horse', cache)).toBe(true);
    expect({ size: cache.size, hits: cache.hits, misses: cache.misses }).toEqual({
      size: 1,
      hits: 0,
      misses: 1,
    });
    expect(await verifyCleartextPassword(data, 'right horse', cache)).toBe(true);
    expect({ size: cache.size, hits: cache.hits, misses: cache.misses }).toEqual({
      size: 1,
      hits: 1,
      misses: 1,
    });
  });

  it('never stores a failure: every wrong guess is derived and refused', async () => {
    const cache = new PasswordCheckCache();
    const data = await createScramSha256Data('right horse');
    for (let i = 0; i < 3; i++) expect(await verifyCleartextPassword(data, 'wrong horse', cache)).toBe(false);
    expect({ size: cache.size, hits: cache.hits, misses: cache.misses }).toEqual({
      size: 0,
      hits: 0,
      misses: 3,
    });
  });

  it('does not carry a success over to a changed password or another verifier', async () => {
    const cache = new PasswordCheckCache();
    const before = await createScramSha256Data('old secret');
    expect(await verifyCleartextPassword(before, 'old secret', cache)).toBe(true);
    // The password changed: a new verifier (new salt and StoredKey) for a new password.
    const after = await createScramSha256Data('new secret');
    expect(await verifyCleartextPassword(after, 'old secret', cache)).toBe(false);
    expect(await verifyCleartextPassword(after, 'new secret', cache)).toBe(true);
    // The same password set again gets a new salt: a miss, derived afresh.
    const again = await createScramSha256Data('old secret');
    const misses = cache.misses;
    expect(await verifyCleartextPassword(again, 'old secret', cache)).toBe(true);
    expect(cache.misses).toBe(misses + 1);
    // A verifier whose StoredKey differs (what mock data for a deleted database looks like) misses.
    const forged = { ...before, storedKey: Buffer.alloc(32, 7).toString('base64') };
    expect(await verifyCleartextPassword(forged, 'old secret', cache)).toBe(false);
  });

  it('keeps at most maxEntries, dropping the least recently used', async () => {
    const cache = new PasswordCheckCache(2);
    const a = await createScramSha256Data('a-password');
    const b = await createScramSha256Data('b-password');
    const c = await createScramSha256Data('c-password');
    await verifyCleartextPassword(a, 'a-password', cache);
    await verifyCleartextPassword(b, 'b-password', cache);
    await verifyCleartextPassword(a, 'a-password', cache); // a is now the most recent
    await verifyCleartextPassword(c, 'c-password', cache); // evicts b
    expect(cache.size).toBe(2);
    expect(cache.has(cache.key(a, 'a-password'))).toBe(true);
    expect(cache.has(cache.key(c, 'c-password'))).toBe(true);
    expect(cache.has(cache.key(b, 'b-password'))).toBe(false);
  });

  it('checks without a cache when given none, and refuses overlong passwords unhashed', async () => {
    const data = await createScramSha256Data('x'.repeat(20));
    const misses = passwordChecks.misses;
    expect(await verifyCleartextPassword(data, 'x'.repeat(20), null)).toBe(true);
    expect(passwordChecks.misses).toBe(misses);
    const cache = new PasswordCheckCache();
    expect(await verifyCleartextPassword(data, 'x'.repeat(2000), cache)).toBe(false);
    expect(cache.misses).toBe(0);
  });
});
