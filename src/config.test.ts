import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('defaults to the embedded single node', () => {
    const c = loadConfig({}, false);
    expect(c.port).toBe(5432);
    expect(c.tls.mode).toBe('require');
    expect(c.dataDir).toBe(path.resolve('dbs'));
    expect(c.templateDir).toBe(path.resolve('dbs/_template'));
    expect(c.catalogUrl).toBeUndefined();
    expect(c.poolMode).toBe('transaction');
    expect(c.tls.generateIfMissing).toBe(true);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('binds to loopback outside production, to all interfaces in production', () => {
    expect(loadConfig({}, false)).toMatchObject({ host: '127.0.0.1', portSet: false });
    expect(loadConfig({ NODE_ENV: 'production' }, false).host).toBe('0.0.0.0');
    expect(loadConfig({ HOST: '0.0.0.0', PORT: '6432' }, false)).toMatchObject({
      host: '0.0.0.0',
      port: 6432,
      portSet: true,
    });
    expect(loadConfig({ NODE_ENV: 'production', HOST: '10.0.0.5' }, false).host).toBe('10.0.0.5');
    expect(loadConfig({ HOST: '', PORT: '' }, false)).toMatchObject({ host: '127.0.0.1', portSet: false });
  });

  it('parses durations and sizes with units', () => {
    const c = loadConfig(
      { LOGIN_TIMEOUT: '500ms', QUERY_WAIT_TIMEOUT: '2m', MAX_MESSAGE_SIZE: '64KiB' },
      false,
    );
    expect(c.loginTimeoutMs).toBe(500);
    expect(c.queryWaitTimeoutMs).toBe(120_000);
    expect(c.maxMessageSize).toBe(65_536);
    expect(loadConfig({ IDLE_IN_TRANSACTION_TIMEOUT: '30' }, false).idleInTransactionTimeoutMs).toBe(30_000);
  });

  it('sizes the engines: warm workers and shared buffers', () => {
    const c = loadConfig({}, false);
    expect(c.warmEngines).toBe(2);
    expect(c.sharedBuffersBytes).toBe(2 * 1024 * 1024);
    expect(loadConfig({ SHARED_BUFFERS: '16MiB', WARM_ENGINES: '0' }, false)).toMatchObject({
      sharedBuffersBytes: 16 * 1024 * 1024,
      warmEngines: 0,
    });
    expect(() => loadConfig({ SHARED_BUFFERS: '64KiB' }, false)).toThrowError(/SHARED_BUFFERS/);
  });

  it('allows every extension by default; EXTENSIONS narrows or empties the list', () => {
    expect(loadConfig({}, false).extensions).toEqual(['all']);
    expect(loadConfig({ EXTENSIONS: 'none' }, false).extensions).toEqual([]);
    expect(loadConfig({ EXTENSIONS: ' vector, pg_trgm,vector,uuid-ossp ' }, false).extensions).toEqual([
      'vector',
      'pg_trgm',
      'uuid-ossp',
    ]);
    expect(() => loadConfig({ EXTENSIONS: 'vector;drop' }, false)).toThrowError(/EXTENSIONS/);
  });

  it('throttles logins and sets a minimum password length', () => {
    const c = loadConfig({}, false);
    expect(c.auth).toEqual({ failThreshold: 5, failWindowMs: 300_000, baseDelayMs: 250, maxDelayMs: 10_000 });
    expect(c.minPasswordLength).toBe(12);
    const set = loadConfig(
      {
        AUTH_FAIL_THRESHOLD: '3',
        AUTH_FAIL_WINDOW: '2s',
        AUTH_BASE_DELAY: '50ms',
        AUTH_MAX_DELAY: '0',
        MIN_PASSWORD_LENGTH: '20',
      },
      false,
    );
    expect(set.auth).toEqual({ failThreshold: 3, failWindowMs: 2000, baseDelayMs: 50, maxDelayMs: 0 });
    expect(set.minPasswordLength).toBe(20);
    expect(() => loadConfig({ AUTH_FAIL_THRESHOLD: '0' }, false)).toThrowError(/AUTH_FAIL_THRESHOLD/);
    expect(() => loadConfig({ MIN_PASSWORD_LENGTH: '0' }, false)).toThrowError(/MIN_PASSWORD_LENGTH/);
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ PORT: '', CATALOG_URL: '' }, false).port).toBe(5432);
  });

  it('names every invalid variable', () => {
    expect(() => loadConfig({ TLS_MODE: 'maybe', PORT: 'x', LOGIN_TIMEOUT: 'soon' }, false)).toThrowError(
      ConfigError,
    );
    try {
      loadConfig({ TLS_MODE: 'maybe', PORT: 'x' }, false);
    } catch (err) {
      expect(String(err)).toMatch(/TLS_MODE/);
      expect(String(err)).toMatch(/PORT/);
    }
  });

  it('never generates certificates in production or with explicit paths', () => {
    expect(loadConfig({ NODE_ENV: 'production' }, false).tls.generateIfMissing).toBe(false);
    expect(loadConfig({ TLS_CERT: '/c.pem', TLS_KEY: '/k.pem' }, false).tls.generateIfMissing).toBe(false);
  });

  it('checks what each TLS_SOURCE needs', () => {
    const pem = '-----BEGIN X-----\nAA==\n-----END X-----\n';
    const env = loadConfig({ TLS_SOURCE: 'env', TLS_CERT: pem, TLS_KEY: pem }, false).tls;
    expect(env).toMatchObject({ source: 'env', certPem: pem, keyPem: pem, generateIfMissing: false });
    expect(() => loadConfig({ TLS_SOURCE: 'env', TLS_CERT: '/c.pem', TLS_KEY: '/k.pem' }, false)).toThrow(
      /PEM text/,
    );
    expect(() => loadConfig({ TLS_SOURCE: 'archive' }, false)).toThrow(/ARCHIVE_URL/);
    expect(() =>
      loadConfig({ TLS_SOURCE: 'archive', ARCHIVE_URL: 'file:///tmp/a', TLS_CERT: '/c.pem' }, false),
    ).toThrow(/not used/);
    const archived = loadConfig({ TLS_SOURCE: 'archive', ARCHIVE_URL: 'file:///tmp/a' }, false).tls;
    expect(archived).toMatchObject({ source: 'archive', generateIfMissing: false, reloadIntervalMs: 60_000 });
    expect(loadConfig({ TLS_RELOAD_INTERVAL: '0' }, false).tls.reloadIntervalMs).toBe(0);
    expect(() => loadConfig({ TLS_SOURCE: 'vault' }, false)).toThrow(/TLS_SOURCE/);
  });
});
