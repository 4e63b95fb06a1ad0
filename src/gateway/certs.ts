import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';

/**
 * Development certificates: a local CA plus a server certificate for `*.<domain>`, so clients can
 * use `sslmode=verify-full` (and send the SNI that routes to a database) against a dev gateway.
 * EC P-256 keeps generation fast; selfsigned signs the leaf with the leaf's key type, so the CA
 * must be EC as well.
 */

const DAY_MS = 86_400_000;
/** Server certificates stay under the 398 days some TLS clients accept. */
const CERT_DAYS = 365;
/** The CA outlives server certificates so re-issuing (`force`) keeps clients' trust in `ca.pem`. */
const CA_DAYS = 5 * 365;
const CA_CN = 'pglite-gateway dev CA';

export type GenerateCertificatesOptions = {
  /** Directory for ca.pem, ca-key.pem, cert.pem, key.pem; created if missing. */
  dir: string;
  /** Wildcard domain; the certificate covers `*.<domain>` and `<domain>`. */
  domain: string;
  /** Re-issue the server certificate even if the files exist (the CA is reused while valid). */
  force?: boolean;
};

export type GeneratedCertificates = {
  caPath: string;
  certPath: string;
  keyPath: string;
  /** False when valid files already existed and nothing was written. */
  generated: boolean;
  /** True when an existing CA (ca.pem + ca-key.pem) signed the new certificate. */
  reusedCa: boolean;
};

export async function generateDevCertificates(
  opts: GenerateCertificatesOptions,
): Promise<GeneratedCertificates> {
  const domain = normalizeDomain(opts.domain);
  const dir = path.resolve(opts.dir);
  const caPath = path.join(dir, 'ca.pem');
  const caKeyPath = path.join(dir, 'ca-key.pem');
  const certPath = path.join(dir, 'cert.pem');
  const keyPath = path.join(dir, 'key.pem');
  const result = { caPath, certPath, keyPath };

  if (!opts.force && (await existingPairIsUsable(caPath, certPath, keyPath))) {
    return { ...result, generated: false, reusedCa: false };
  }
  await mkdir(dir, { recursive: true });
  // Loaded only to generate: selfsigned and its X.509 libraries cost ~8 MB of a node's memory.
  const { generate } = await import('selfsigned');

  const now = new Date();
  const notAfter = new Date(now.getTime() + CERT_DAYS * DAY_MS);
  let ca = await loadReusableCa(caPath, caKeyPath, notAfter);
  const reusedCa = ca !== undefined;
  if (!ca) {
    const pems = await generate([{ name: 'commonName', value: CA_CN }], {
      keyType: 'ec',
      algorithm: 'sha256',
      notBeforeDate: now,
      notAfterDate: new Date(now.getTime() + CA_DAYS * DAY_MS),
      extensions: [
        { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
        { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      ],
    });
    ca = { cert: pems.cert, key: pems.private };
  }

  const server = await generate(
    [
      { name: 'commonName', value: `*.${domain}` },
      { name: 'organizationName', value: 'pglite-gateway dev' },
    ],
    {
      keyType: 'ec',
      algorithm: 'sha256',
      notBeforeDate: now,
      notAfterDate: notAfter,
      ca,
      extensions: [
        { name: 'basicConstraints', cA: false, critical: true },
        { name: 'keyUsage', digitalSignature: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: [
            { type: 2, value: `*.${domain}` },
            { type: 2, value: domain },
            { type: 2, value: 'localhost' },
            { type: 7, ip: '127.0.0.1' },
            { type: 7, ip: '::1' },
          ],
        },
      ],
    },
  );

  // Keys land before the certificates that need them; cert.pem goes last because its presence
  // (with a matching key) is what makes a later call skip generation.
  if (!reusedCa) {
    await writeAtomic(caKeyPath, ca.key, 0o600);
    await writeAtomic(caPath, ca.cert, 0o644);
  }
  await writeAtomic(keyPath, server.private, 0o600);
  await writeAtomic(certPath, server.cert, 0o644);
  return { ...result, generated: true, reusedCa };
}

/** Reads a certificate and key for the TLS listener, with errors that name the file at fault. */
export async function loadTlsFiles(paths: {
  certPath: string;
  keyPath: string;
}): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = await Promise.all([
    readTlsFile(paths.certPath, 'certificate'),
    readTlsFile(paths.keyPath, 'private key'),
  ]);
  let matches: boolean;
  try {
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new Error(`invalid TLS files ${paths.certPath} / ${paths.keyPath}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!matches) {
    throw new Error(`TLS private key ${paths.keyPath} does not belong to certificate ${paths.certPath}`);
  }
  return { cert, key };
}

async function readTlsFile(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'not found (set TLS_CERT/TLS_KEY, or run `npm run certs` for dev certificates)'
        : code === 'EACCES'
          ? `permission denied for uid ${process.getuid?.() ?? '?'}`
          : (err as Error).message;
    throw new Error(`cannot read TLS ${what} ${file}: ${why}`, { cause: err });
  }
}

function normalizeDomain(raw: string): string {
  const domain = raw.trim().toLowerCase().replace(/^\*\./, '').replace(/\.$/, '');
  // Also keeps the value safe inside the "CN=..., O=..." subject string selfsigned builds.
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(domain)) {
    throw new Error(`invalid domain for certificates: "${raw}"`);
  }
  return domain;
}

/** Existing files count only if the key opens the certificate; anything else is re-issued. */
async function existingPairIsUsable(caPath: string, certPath: string, keyPath: string): Promise<boolean> {
  const [ca, cert, key] = await Promise.all([caPath, certPath, keyPath].map(readIfExists));
  if (!ca || !cert || !key) return false;
  try {
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    return false;
  }
}

/** A stored CA is reused if its key matches, it is EC, and it outlives the new certificate. */
async function loadReusableCa(
  caPath: string,
  caKeyPath: string,
  until: Date,
): Promise<{ cert: string; key: string } | undefined> {
  const [cert, key] = await Promise.all([caPath, caKeyPath].map(readIfExists));
  if (!cert || !key) return undefined;
  try {
    const x509 = new X509Certificate(cert);
    const privateKey = createPrivateKey(key);
    const usable =
      x509.ca &&
      privateKey.asymmetricKeyType === 'ec' &&
      x509.checkPrivateKey(privateKey) &&
      new Date(x509.validTo).getTime() > until.getTime();
    return usable ? { cert: cert.toString('utf8'), key: key.toString('utf8') } : undefined;
  } catch {
    return undefined;
  }
}

async function readIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Temp file + fsync + rename, so a crash leaves either the old file or the whole new one. */
async function writeAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const handle = await open(tmp, 'wx', mode);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
