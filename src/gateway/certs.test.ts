import { createPrivateKey, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GeneratedCertificates, generateDevCertificates, loadTlsFiles } from './certs.js';

let root: string;
let dir: string;
let files: GeneratedCertificates;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'pgl-certs-'));
  dir = path.join(root, 'nested', 'tls');
  files = await generateDevCertificates({ dir, domain: 'db.example.com' });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const x509 = async (file: string) => new X509Certificate(await readFile(file));

describe('generateDevCertificates', () => {
  it('writes a CA and a server certificate signed by it', async () => {
    expect(files.generated).toBe(true);
    expect(files.reusedCa).toBe(false);
    const ca = await x509(files.caPath);
    const cert = await x509(files.certPath);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toContain('CN=pglite-gateway dev CA');
    expect(cert.ca).toBe(false);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // Node's keyUsage is the EKU list: serverAuth
    const validDays = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    expect(validDays).toBeGreaterThan(360);
    expect(validDays).toBeLessThan(398);
  });

  it('covers the wildcard domain, the bare domain, localhost and loopback IPs', async () => {
    const san = (await x509(files.certPath)).subjectAltName?.split(', ') ?? [];
    expect(san).toEqual(
      expect.arrayContaining([
        'DNS:*.db.example.com',
        'DNS:db.example.com',
        'DNS:localhost',
        'IP Address:127.0.0.1',
        'IP Address:0:0:0:0:0:0:0:1',
      ]),
    );
  });

  it('writes the matching private key with mode 0600', async () => {
    const cert = await x509(files.certPath);
    expect(cert.checkPrivateKey(createPrivateKey(await readFile(files.keyPath)))).toBe(true);
    for (const file of [files.keyPath, path.join(dir, 'ca-key.pem')]) {
      expect((await stat(file)).mode & 0o777).toBe(0o600);
    }
  });

  it('leaves existing files alone unless forced, and keeps the CA when forced', async () => {
    const before = await Promise.all([files.caPath, files.certPath, files.keyPath].map((f) => readFile(f)));
    const again = await generateDevCertificates({ dir, domain: 'db.example.com' });
    expect(again.generated).toBe(false);
    const same = await Promise.all([files.caPath, files.certPath, files.keyPath].map((f) => readFile(f)));
    expect(same).toEqual(before);

    const forced = await generateDevCertificates({ dir, domain: 'other.test', force: true });
    expect(forced).toMatchObject({ generated: true, reusedCa: true });
    const [ca, cert, key] = await Promise.all(
      [files.caPath, files.certPath, files.keyPath].map((f) => readFile(f)),
    );
    expect(ca).toEqual(before[0]); // clients trusting ca.pem keep working
    expect(cert).not.toEqual(before[1]);
    expect(key).not.toEqual(before[2]);
    const reissued = new X509Certificate(cert as Buffer);
    expect(reissued.subjectAltName).toContain('DNS:*.other.test');
    expect(reissued.checkIssued(new X509Certificate(ca as Buffer))).toBe(true);

    // Put the original domain back for the handshake tests below.
    await generateDevCertificates({ dir, domain: 'db.example.com', force: true });
  });

  it('re-issues when key.pem does not belong to cert.pem (e.g. a crash between renames)', async () => {
    const scratch = path.join(root, 'mismatch');
    const first = await generateDevCertificates({ dir: scratch, domain: 'db.example.com' });
    const other = await generateDevCertificates({ dir: path.join(root, 'other'), domain: 'db.example.com' });
    await writeFile(first.keyPath, await readFile(other.keyPath));
    const again = await generateDevCertificates({ dir: scratch, domain: 'db.example.com' });
    expect(again.generated).toBe(true);
    await expect(loadTlsFiles(again)).resolves.toBeDefined();
  });

  it('rejects a domain that is not a hostname', async () => {
    await expect(generateDevCertificates({ dir: root, domain: 'a, O=x' })).rejects.toThrow(/invalid domain/);
  });
});

describe('loadTlsFiles', () => {
  it('names the missing file', async () => {
    const missing = path.join(root, 'nope.pem');
    await expect(loadTlsFiles({ certPath: files.certPath, keyPath: missing })).rejects.toThrow(missing);
  });

  it('rejects a key that does not belong to the certificate', async () => {
    await expect(
      loadTlsFiles({ certPath: files.certPath, keyPath: path.join(dir, 'ca-key.pem') }),
    ).rejects.toThrow(/does not belong/);
  });
});

describe('TLS handshake with the generated files', () => {
  /** Connects with the CA as the only trust root; resolves with the client's verdict. */
  async function handshake(servername: string): Promise<{ authorized: boolean; error?: string }> {
    const { cert, key } = await loadTlsFiles(files);
    const ca = await readFile(files.caPath);
    const server = tls.createServer({ cert, key }, (socket) => socket.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      // rejectUnauthorized: false lets us read the verdict instead of catching a socket error.
      const socket = tls.connect({ host: '127.0.0.1', port, ca, servername, rejectUnauthorized: false });
      await once(socket, 'secureConnect');
      socket.destroy();
      const error = socket.authorizationError ? String(socket.authorizationError) : undefined;
      return error ? { authorized: socket.authorized, error } : { authorized: socket.authorized };
    } finally {
      server.close();
    }
  }

  it('verifies for a database name under the wildcard domain', async () => {
    expect(await handshake('abc.db.example.com')).toEqual({ authorized: true });
  });

  it('fails verification for a name outside the certificate', async () => {
    const result = await handshake('evil.com');
    expect(result.authorized).toBe(false);
    expect(result.error).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID|does not match/);
  });

  it('is rejected outright by a strict client for a wrong name', async () => {
    const { cert, key } = await loadTlsFiles(files);
    const server = tls.createServer({ cert, key }, (socket) => socket.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        ca: await readFile(files.caPath),
        servername: 'evil.com',
      });
      const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
      expect(err.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    } finally {
      server.close();
    }
  });
});
