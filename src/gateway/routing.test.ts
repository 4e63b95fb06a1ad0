import { describe, expect, it } from 'vitest';
import { databasePath, idFromServerName, parseStartupOptions, routeConnection } from './routing.js';

const route = (serverName: string | undefined, params: Record<string, string>) =>
  routeConnection({ serverName, params: { user: 'u', ...params }, wildcardDomain: 'db.example.com' });

describe('routing', () => {
  it('takes the id from SNI under the wildcard domain', () => {
    expect(idFromServerName('abc.db.example.com', 'db.example.com')).toBe('abc');
    expect(idFromServerName('ABC.DB.EXAMPLE.COM', 'db.example.com')).toBe('abc');
    expect(idFromServerName('localhost', 'db.example.com')).toBeUndefined();
    expect(idFromServerName(undefined, 'db.example.com')).toBeUndefined();
    expect(route('abc.db.example.com', { database: 'postgres' })).toMatchObject({
      ok: true,
      id: 'abc',
      source: 'sni',
    });
  });

  it('falls back to options endpoint, then database name', () => {
    expect(route(undefined, { options: 'endpoint=xyz', database: 'other' })).toMatchObject({ id: 'xyz' });
    expect(route(undefined, { database: 'xyz' })).toMatchObject({ id: 'xyz', source: 'database' });
  });

  it('refuses disagreement and absence', () => {
    expect(route('abc.db.example.com', { database: 'xyz' })).toMatchObject({ ok: false });
    expect(route('abc.db.example.com', { options: 'endpoint=xyz' })).toMatchObject({ ok: false });
    const none = route(undefined, {});
    expect(none.ok).toBe(false);
    if (!none.ok) expect(none.error.message).toMatch(/endpoint=/);
  });

  it.each(['..', '.', 'a/b', 'A', 'é', 'a'.repeat(64), 'abc.', '-a', ''])('refuses id %j', (id) => {
    const r = route(undefined, { options: `endpoint=${id}` });
    if (id === '') expect(r.ok).toBe(false);
    else expect(r).toMatchObject({ ok: false });
  });

  it('never resolves a path outside the data root', () => {
    expect(databasePath('/data', 'abc')).toBe('/data/abc');
    expect(() => databasePath('/data', '..')).toThrow();
    expect(() => databasePath('/data', '../etc')).toThrow();
  });

  it('parses -c settings and escapes in options', () => {
    expect(parseStartupOptions('-c search_path=a\\ b --statement-timeout=5 endpoint=x')).toEqual({
      endpoint: 'x',
      settings: { search_path: 'a b', statement_timeout: '5' },
    });
  });
});
