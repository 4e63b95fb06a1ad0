import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { generateDevCertificates } from '../../src/gateway/certs.js';
import { ARCHIVE_CERT_KEY, ARCHIVE_KEY_KEY } from '../../src/gateway/tls.js';
import { openArchive } from '../../src/storage/open-archive.js';
import { startS3, type TestS3 } from '../helpers/s3.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Where the server certificate comes from (TLS_SOURCE) and its renewal without a restart
 * (TLS_RELOAD_INTERVAL): a new pair written over the files is served to new handshakes of the
 * Postgres listener and the HTTPS front door; a pair whose key does not match is ignored; the
 * certificate can come from environment secrets or from the archive (s3rver).
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let scratch: string;

/** A fresh CA and a certificate for *.db.example.com signed by it. */
async function newAuthority(name: string) {
  const dir = path.join(scratch, `${name}-${randomBytes(4).toString('hex')}`);
  await generateDevCertificates({ dir, domain: 'db.example.com' });
  const read = (f: string) => readFile(path.join(dir, f));
  return { ca: await read('ca.pem'), cert: await read('cert.pem'), key: await read('key.pem') };
}

/** Whether a Postgres client that trusts only `ca` can log in to `db`. */
async function trusts(t: TestServer, db: string, password: string, ca: Buffer): Promise<boolean> {
  const c = new pg.Client({ ...t.pgConfig(db, password), ssl: { ca, servername: `${db}.db.example.com` } });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Whether a TLS client that trusts only `ca` completes a handshake with the HTTPS front door. */
function httpsTrusts(port: number, ca: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'x.db.example.com' }, () => {
      resolve(socket.authorized);
      socket.destroy();
    });
    socket.on('error', () => resolve(false));
  });
}

async function eventually(check: () => Promise<boolean>, tries = 60): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return true;
    await sleep(100);
  }
  return false;
}

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'gw-tls-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('TLS_SOURCE=files with TLS_RELOAD_INTERVAL', () => {
  let t: TestServer;
  let certPath: string;
  let keyPath: string;
  let first: Awaited<ReturnType<typeof newAuthority>>;
  beforeAll(async () => {
    first = await newAuthority('first');
    certPath = path.join(scratch, 'served-cert.pem');
    keyPath = path.join(scratch, 'served-key.pem');
    await writeFile(certPath, first.cert);
    await writeFile(keyPath, first.key);
    t = await startTestServer({ TLS_CERT: certPath, TLS_KEY: keyPath, TLS_RELOAD_INTERVAL: '100ms' });
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('serves a renewed certificate to new handshakes, on TCP and HTTPS, without a restart', async () => {
    const password = await t.createDatabase('renewed');
    expect(await trusts(t, 'renewed', password, first.ca)).toBe(true);
    expect(await httpsTrusts(t.httpPort, first.ca)).toBe(true);
    // A client that stays connected keeps its session across the renewal.
    const kept = new pg.Client(
      t.pgConfig('renewed', password, { ssl: { ca: first.ca, servername: 'renewed.db.example.com' } }),
    );
    await kept.connect();

    const second = await newAuthority('second');
    // Not atomic on purpose: a reload may see the new key with the old certificate, which it skips.
    await writeFile(keyPath, second.key);
    await writeFile(certPath, second.cert);
    expect(await eventually(() => trusts(t, 'renewed', password, second.ca))).toBe(true);
    expect(await trusts(t, 'renewed', password, first.ca)).toBe(false);
    expect(await eventually(() => httpsTrusts(t.httpPort, second.ca))).toBe(true);
    expect(await httpsTrusts(t.httpPort, first.ca)).toBe(false);
    expect((await kept.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    await kept.end();

    // A key that is not the certificate's: ignored, the renewed pair stays in service.
    const stray = await newAuthority('stray');
    await writeFile(keyPath, stray.key);
    await sleep(500);
    expect(await trusts(t, 'renewed', password, second.ca)).toBe(true);
    expect(await httpsTrusts(t.httpPort, second.ca)).toBe(true);
    // Garbage is ignored as well.
    await writeFile(certPath, 'not a certificate');
    await sleep(500);
    expect(await trusts(t, 'renewed', password, second.ca)).toBe(true);
  });
});

describe('TLS_SOURCE=env', () => {
  it('serves the certificate held in TLS_CERT and TLS_KEY', async () => {
    const pair = await newAuthority('env');
    const t = await startTestServer({
      TLS_SOURCE: 'env',
      TLS_CERT: pair.cert.toString(),
      TLS_KEY: pair.key.toString(),
    });
    try {
      const password = await t.createDatabase('from-env');
      expect(await trusts(t, 'from-env', password, pair.ca)).toBe(true);
      expect(await httpsTrusts(t.httpPort, pair.ca)).toBe(true);
    } finally {
      await t.close();
    }
  }, 60_000);

  it('refuses to start with a key that is not the certificate’s, saying so', async () => {
    const [a, b] = [await newAuthority('a'), await newAuthority('b')];
    await expect(
      startTestServer({ TLS_SOURCE: 'env', TLS_CERT: a.cert.toString(), TLS_KEY: b.key.toString() }),
    ).rejects.toThrow(/private key does not belong to the certificate/);
  }, 60_000);
});

describe('TLS_SOURCE=archive (s3rver)', () => {
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startS3();
  });
  afterAll(async () => {
    await s3?.close();
  });

  it('serves the certificate stored in the archive, and the one that replaces it', async () => {
    const env = {
      ...s3.env('tls-test'),
      TLS_SOURCE: 'archive',
      TLS_RELOAD_INTERVAL: '100ms',
    };
    const config = loadConfig(env);
    const archive = await openArchive(config.archive.url, { s3: config.archive.s3 });
    if (!archive) throw new Error('no archive');
    // Missing objects: the node does not start, and names each one it looked for.
    await expect(startTestServer(env)).rejects.toThrow(
      /_tls\/cert\.pem is not in the archive.*; _tls\/key\.pem is not in the archive/,
    );

    const pair = await newAuthority('archived');
    await archive.put(ARCHIVE_CERT_KEY, Readable.from([pair.cert]));
    await archive.put(ARCHIVE_KEY_KEY, Readable.from([pair.key]));
    const t = await startTestServer(env);
    try {
      const password = await t.createDatabase('from-archive');
      expect(await trusts(t, 'from-archive', password, pair.ca)).toBe(true);
      // A renewal replaces the objects (archive objects the gateway writes are immutable; these
      // are the operator's, replaced with their own tools).
      const next = await newAuthority('archived-next');
      await archive.delete(ARCHIVE_KEY_KEY);
      await archive.delete(ARCHIVE_CERT_KEY);
      await archive.put(ARCHIVE_KEY_KEY, Readable.from([next.key]));
      await archive.put(ARCHIVE_CERT_KEY, Readable.from([next.cert]));
      expect(await eventually(() => trusts(t, 'from-archive', password, next.ca))).toBe(true);
    } finally {
      await t.close();
      await archive.close();
    }
  }, 120_000);
});
