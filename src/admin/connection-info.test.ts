import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import {
  connectionDefaults,
  connectionInfo,
  conninfoValue,
  offlineConnectionDefaults,
  shellQuote,
} from './connection-info.js';

const base = {
  id: 'abc',
  username: 'postgres',
  password: 'pw',
  domain: 'db.example.com',
  port: 5432,
  caPath: '/etc/tls/ca.pem',
  hostaddr: '127.0.0.1',
};

describe('connectionInfo', () => {
  it('formats the URL and the psql line with verify-full', () => {
    expect(connectionInfo(base)).toEqual({
      connectionString:
        'postgres://postgres:pw@abc.db.example.com:5432/postgres?sslmode=verify-full&sslrootcert=/etc/tls/ca.pem',
      psql:
        'psql "host=abc.db.example.com hostaddr=127.0.0.1 port=5432 user=postgres password=pw dbname=postgres ' +
        'sslmode=verify-full sslrootcert=/etc/tls/ca.pem"',
    });
  });

  it('URL-encodes user and password and the CA path', () => {
    const info = connectionInfo({ ...base, username: 'a@b', password: 'p:w/@?#%', caPath: '/my dir/ca.pem' });
    expect(info.connectionString).toBe(
      'postgres://a%40b:p%3Aw%2F%40%3F%23%25@abc.db.example.com:5432/postgres' +
        '?sslmode=verify-full&sslrootcert=/my%20dir/ca.pem',
    );
    const url = new URL(info.connectionString);
    expect(decodeURIComponent(url.username)).toBe('a@b');
    expect(decodeURIComponent(url.password)).toBe('p:w/@?#%');
    expect(url.searchParams.get('sslrootcert')).toBe('/my dir/ca.pem');
  });

  it('uses the system trust store without a CA file and omits hostaddr when not given', () => {
    const info = connectionInfo({ ...base, caPath: undefined, hostaddr: undefined });
    expect(info.connectionString).toMatch(/sslrootcert=system$/);
    expect(info.psql).toBe(
      'psql "host=abc.db.example.com port=5432 user=postgres password=pw dbname=postgres sslmode=verify-full sslrootcert=system"',
    );
  });

  it('quotes hostile passwords so the psql line survives a POSIX shell', () => {
    const password = `it's "$HOME" \`x\` \\ !`;
    const { psql } = connectionInfo({ ...base, password });
    // What psql would receive as its one argument, via a real shell.
    const arg = execFileSync('/bin/sh', ['-c', `printf %s ${psql.slice('psql '.length)}`], {
      encoding: 'utf8',
    });
    expect(arg).toContain(`password=${conninfoValue(password)} `);
    expect(conninfoValue(password)).toBe(`'it\\'s "$HOME" \`x\` \\\\ !'`);
  });
});

describe('quoting helpers', () => {
  it('leaves plain conninfo values bare and quotes the rest', () => {
    expect(conninfoValue('abc-_.1')).toBe('abc-_.1');
    expect(conninfoValue('')).toBe("''");
    expect(conninfoValue('a b')).toBe("'a b'");
  });

  it('prefers double quotes and falls back to single quotes', () => {
    expect(shellQuote('a b')).toBe('"a b"');
    expect(shellQuote("a'$b")).toBe(`'a'\\''$b'`);
  });
});

describe('connectionDefaults', () => {
  it('points at the dev CA and 127.0.0.1 outside production', () => {
    const config = loadConfig({ TLS_DIR: '/tmp/t', WILDCARD_DOMAIN: '*.Dev.Test' }, false);
    expect(connectionDefaults(config, 6000)).toEqual({
      domain: 'dev.test',
      port: 6000,
      caPath: '/tmp/t/ca.pem',
      hostaddr: '127.0.0.1',
    });
  });

  it('without a server, gives the port only when PORT is set here, and says so otherwise', () => {
    const set = offlineConnectionDefaults(loadConfig({ PORT: '6432' }, false));
    expect(set).toMatchObject({ defaults: { port: 6432 }, note: undefined });
    const unset = offlineConnectionDefaults(loadConfig({}, false));
    expect(unset.defaults.port).toBeUndefined();
    expect(unset.note).toMatch(/port is not known: PORT is not set here/);
    const picked = offlineConnectionDefaults(loadConfig({ PORT: '0' }, false));
    expect(picked.defaults.port).toBeUndefined();
    expect(picked.note).toMatch(/PORT=0/);
    // An unknown port is left out of both forms, not printed as a guess.
    const info = connectionInfo({ ...base, port: undefined });
    expect(info.connectionString).toMatch(/^postgres:\/\/postgres:pw@abc\.db\.example\.com\/postgres\?/);
    expect(info.psql).not.toContain('port=');
  });

  it('relies on the system trust store with real certificates in production', () => {
    const config = loadConfig({ NODE_ENV: 'production', TLS_CERT: '/c.pem', TLS_KEY: '/k.pem' }, false);
    expect(connectionDefaults(config)).toEqual({
      domain: 'db.example.com',
      port: 5432,
      caPath: undefined,
      hostaddr: undefined,
    });
  });
});
