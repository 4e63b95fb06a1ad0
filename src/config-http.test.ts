import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';
import { isReservedDatabaseId } from './ids.js';

describe('HTTP front door configuration', () => {
  it('defaults to HTTPS on 0.0.0.0:8443 with a 10 MB response limit and 60 s to receive a request', () => {
    expect(loadConfig({}, false).http).toEqual({
      port: 8443,
      host: '0.0.0.0',
      tls: 'require',
      maxResponseBytes: 10_000_000,
      requestTimeoutMs: 60_000,
    });
    expect(loadConfig({ HTTP_REQUEST_TIMEOUT: '5s' }, false).http.requestTimeoutMs).toBe(5000);
  });

  it('allows HTTP_TLS=disable only on a loopback HTTP_HOST', () => {
    expect(loadConfig({ HTTP_TLS: 'disable', HTTP_HOST: '127.0.0.1' }, false).http.tls).toBe('disable');
    expect(loadConfig({ HTTP_TLS: 'disable', HTTP_HOST: '::1' }, false).http.tls).toBe('disable');
    expect(() => loadConfig({ HTTP_TLS: 'disable' }, false)).toThrow(ConfigError);
    expect(() => loadConfig({ HTTP_TLS: 'disable', HTTP_HOST: '10.0.0.1' }, false)).toThrow(/loopback/);
  });

  it('reserves the driver host names api and apiauth', () => {
    expect(isReservedDatabaseId('api')).toBe(true);
    expect(isReservedDatabaseId('apiauth')).toBe(true);
    expect(isReservedDatabaseId('apis')).toBe(false);
  });
});
