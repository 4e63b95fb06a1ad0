import { describe, expect, it } from 'vitest';
import { databasePath, isReservedDatabaseId, isValidDatabaseId } from '../ids.js';
import { idFromServerName, parseStartupOptions, routeConnection } from './routing.js';

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

  it.each([
    ['no dbname', {}],
    ['an empty dbname', { database: '' }],
    ["libpq's default dbname, the user name", { database: 'u' }],
    ['dbname postgres', { database: 'postgres' }],
    ['dbname template1', { database: 'template1' }],
  ])('refuses %s without SNI or endpoint as naming no database, before authentication', (_, params) => {
    const r = route(undefined, params);
    expect(r).toMatchObject({ ok: false, error: { code: '08004', label: 'no_database_id' } });
    if (!r.ok) expect(r.error.message).toMatch(/<id>\.db\.example\.com.*endpoint=<id>.*dbname=<id>/);
    // The same without a usable SNI name: an IP address (none sent), localhost, the bare domain.
    for (const name of ['localhost', 'db.example.com', 'example.com']) {
      expect(route(name, params)).toMatchObject({ ok: false, error: { code: '08004' } });
    }
  });

  it('still routes an explicit endpoint or SNI name, whatever the dbname', () => {
    expect(route(undefined, { database: 'u', options: 'endpoint=abc' })).toMatchObject({
      ok: true,
      id: 'abc',
    });
    expect(route('abc.db.example.com', { database: 'u' })).toMatchObject({ ok: true, id: 'abc' });
    expect(route('localhost', { database: 'abc' })).toMatchObject({
      ok: true,
      id: 'abc',
      source: 'database',
    });
    // A user who is not named like the database: the dbname is the id.
    expect(route(undefined, { user: 'alice', database: 'u' })).toMatchObject({ ok: true, id: 'u' });
  });

  it('reserves the ids a dbname cannot reach', () => {
    for (const id of ['postgres', 'template0', 'template1']) {
      expect(isValidDatabaseId(id)).toBe(true);
      expect(isReservedDatabaseId(id)).toBe(true);
    }
    expect(isReservedDatabaseId('postgres1')).toBe(false);
    expect(isReservedDatabaseId('demo')).toBe(false);
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
