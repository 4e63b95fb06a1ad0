import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ArchiveStore } from '../storage/archive.js';
import { openArchive } from '../storage/open-archive.js';
import { generateDevCertificates } from './certs.js';

/**
 * The server certificate of the Postgres listener and the HTTPS front door, from where TLS_SOURCE
 * says: files (generated in development when missing), environment secrets, or the archive
 * (`_tls/cert.pem`, `_tls/key.pem`: nodes without a volume share one certificate). Every
 * TLS_RELOAD_INTERVAL it is read again; a changed pair whose key matches its certificate is served
 * to new handshakes from then on (a renewal needs no restart). A pair that does not load is
 * refused at start, and on a reload logged and ignored: the node keeps the one it has.
 */

export interface CertificatePair {
  cert: Buffer;
  key: Buffer;
}

/** Archive keys of TLS_SOURCE=archive (database ids cannot start with `_`). */
export const ARCHIVE_CERT_KEY = '_tls/cert.pem';
export const ARCHIVE_KEY_KEY = '_tls/key.pem';
/** A certificate chain or a key larger than this is not a PEM file. */
const MAX_PEM_BYTES = 256 * 1024;

export class CertificateError extends Error {
  override readonly name = 'CertificateError';
}

/** Checks that `pair` is a PEM certificate and the private key that goes with it. */
export function checkPair(pair: CertificatePair): { subject: string; validTo: string } {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pair.cert);
  } catch (err) {
    throw new CertificateError(`the certificate is not a PEM certificate: ${(err as Error).message}`);
  }
  let ok: boolean;
  try {
    ok = x509.checkPrivateKey(createPrivateKey(pair.key));
  } catch (err) {
    throw new CertificateError(`the private key is not a PEM private key: ${(err as Error).message}`);
  }
  if (!ok) throw new CertificateError('the private key does not belong to the certificate');
  return { subject: x509.subject.replace(/\n/g, ', '), validTo: x509.validTo };
}

const contextOf = (pair: CertificatePair) =>
  createSecureContext({ cert: pair.cert, key: pair.key, minVersion: 'TLSv1.2' });

export class Certificates {
  private context: SecureContext;
  private readonly listeners: ((pair: CertificatePair) => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private reloading = false;
  private lastError = '';

  private constructor(
    private pair: CertificatePair,
    private readonly read: () => Promise<CertificatePair>,
    private readonly logger: Logger,
    private readonly onClose: () => Promise<void>,
  ) {
    this.context = contextOf(pair);
  }

  /** Loads the certificate (generating dev certificates when allowed and missing). */
  static async open(config: Config, logger: Logger): Promise<Certificates> {
    const tls = config.tls;
    let archive: ArchiveStore | undefined;
    let read: () => Promise<CertificatePair>;
    if (tls.source === 'env') {
      const pair = { cert: Buffer.from(tls.certPem ?? ''), key: Buffer.from(tls.keyPem ?? '') };
      read = async () => pair;
    } else if (tls.source === 'archive') {
      archive = await openArchive(config.archive.url, { s3: config.archive.s3 });
      const store = archive as ArchiveStore;
      read = async () => {
        // Both read at once; every object that is missing is named, the certificate first.
        const [cert, key] = await Promise.allSettled([
          readObject(store, ARCHIVE_CERT_KEY),
          readObject(store, ARCHIVE_KEY_KEY),
        ]);
        if (cert.status === 'fulfilled' && key.status === 'fulfilled')
          return { cert: cert.value, key: key.value };
        const failed = [cert, key].flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
        // An archive that did not answer is not a missing certificate: that error goes as it is.
        const unreachable = failed.find((e) => !(e instanceof CertificateError));
        if (unreachable || failed.length === 1) throw unreachable ?? failed[0];
        throw new CertificateError(failed.map((e) => e.message).join('; '));
      };
    } else {
      if (tls.generateIfMissing) {
        const result = await generateDevCertificates({ dir: tls.dir, domain: config.wildcardDomain });
        if (result.generated) logger.info({ dir: tls.dir }, 'generated development TLS certificates');
      }
      const file = (p: string) =>
        readFile(p).catch(() => {
          throw new CertificateError(
            `cannot read TLS file ${p} (set TLS_CERT and TLS_KEY, or run the certs command)`,
          );
        });
      read = async () => {
        const [cert, key] = await Promise.all([file(tls.certPath), file(tls.keyPath)]);
        return { cert, key };
      };
    }
    const close = async () => {
      await archive?.close();
    };
    try {
      const pair = await read();
      const about = checkPair(pair);
      logger.info({ source: tls.source, ...about }, 'TLS certificate loaded');
      const certificates = new Certificates(pair, read, logger, close);
      // An env secret cannot change under a running process.
      if (tls.reloadIntervalMs > 0 && tls.source !== 'env') certificates.watch(tls.reloadIntervalMs);
      return certificates;
    } catch (err) {
      await close();
      if (err instanceof CertificateError) throw new CertificateError(`TLS (${tls.source}): ${err.message}`);
      throw err;
    }
  }

  /** For new TLS handshakes on the Postgres listener. */
  secureContext(): SecureContext {
    return this.context;
  }

  current(): CertificatePair {
    return this.pair;
  }

  /** Called with each new pair once it is served (the HTTPS front door swaps its context). */
  onChange(listener: (pair: CertificatePair) => void): void {
    this.listeners.push(listener);
  }

  /** Reads the pair again; serves it when it changed and is valid. True when it changed. */
  async reload(): Promise<boolean> {
    if (this.reloading) return false;
    this.reloading = true;
    try {
      const pair = await this.read();
      if (pair.cert.equals(this.pair.cert) && pair.key.equals(this.pair.key)) return false;
      const about = checkPair(pair);
      this.context = contextOf(pair);
      this.pair = pair;
      this.lastError = '';
      for (const listener of this.listeners) listener(pair);
      this.logger.info(about, 'TLS certificate reloaded: new handshakes use it');
      return true;
    } catch (err) {
      const message = (err as Error).message;
      // Logged once per distinct problem, not at every interval.
      if (message !== this.lastError)
        this.logger.warn({ err: message }, 'TLS certificate not reloaded; the current one stays');
      this.lastError = message;
      return false;
    } finally {
      this.reloading = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.onClose();
  }

  private watch(intervalMs: number): void {
    this.timer = setInterval(() => void this.reload(), intervalMs);
    this.timer.unref();
  }
}

async function readObject(archive: ArchiveStore, key: string): Promise<Buffer> {
  const head = await archive.head(key);
  if (!head) throw new CertificateError(`${key} is not in the archive (${archive.describe()})`);
  if (head.size > MAX_PEM_BYTES) throw new CertificateError(`${key} is ${head.size} bytes: not a PEM file`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of await archive.get(key)) {
    size += (chunk as Buffer).length;
    if (size > MAX_PEM_BYTES)
      throw new CertificateError(`${key} is over ${MAX_PEM_BYTES} bytes: not a PEM file`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
