import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.js';

const full = {
  CLUSTER_ADDRESS: '10.0.0.5:5433',
  CATALOG_URL: 'postgres://catalog/gw',
  ARCHIVE_URL: 's3://bucket/prefix',
  NODE_ID: 'node-a',
  CLUSTER_SECRET: 'sixteen-chars-or-more',
};

describe('cluster configuration', () => {
  it('is off without CLUSTER_ADDRESS', () => {
    expect(loadConfig({}, false).cluster).toBeUndefined();
  });

  it('reads the cluster settings with their defaults', () => {
    expect(loadConfig(full, false).cluster).toEqual({
      address: '10.0.0.5:5433',
      port: 5433,
      secret: 'sixteen-chars-or-more',
      leaseTtlMs: 10_000,
    });
    expect(loadConfig({ ...full, CLUSTER_PORT: '7000', LEASE_TTL: '2s' }, false).cluster).toMatchObject({
      port: 7000,
      leaseTtlMs: 2000,
    });
  });

  it.each([
    ['CATALOG_URL', { CATALOG_URL: '' }],
    ['ARCHIVE_URL', { ARCHIVE_URL: '' }],
    ['NODE_ID', { NODE_ID: undefined }],
    ['CLUSTER_SECRET', { CLUSTER_SECRET: 'short' }],
    ['CLUSTER_ADDRESS', { CLUSTER_ADDRESS: 'no-port' }],
    ['DURABILITY', { DURABILITY: 'local' }],
    ['LEASE_TTL', { LEASE_TTL: '100ms' }],
  ])('refuses to start without a proper %s, saying why', (name, patch) => {
    const env: Record<string, string | undefined> = { ...full, ...patch };
    expect(() => loadConfig(env, false)).toThrow(ConfigError);
    expect(() => loadConfig(env, false)).toThrow(new RegExp(`${name}:`));
  });
});
