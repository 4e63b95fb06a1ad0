import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { generateDevCertificates } from './certs.js';

/** Loads the server certificate (generating dev certificates when allowed and missing). */
export async function loadSecureContext(config: Config, logger: Logger): Promise<SecureContext | undefined> {
  if (config.tls.mode === 'disable') {
    logger.warn('TLS_MODE=disable: passwords and data cross the network in plaintext');
    return undefined;
  }
  if (config.tls.generateIfMissing) {
    const result = await generateDevCertificates({ dir: config.tls.dir, domain: config.wildcardDomain });
    if (result.generated) logger.info({ dir: config.tls.dir }, 'generated development TLS certificates');
  }
  const read = (p: string) =>
    readFile(p).catch(() => {
      throw new Error(`cannot read TLS file ${p} (set TLS_CERT and TLS_KEY, or run the certs command)`);
    });
  const [cert, key] = await Promise.all([read(config.tls.certPath), read(config.tls.keyPath)]);
  return createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
}
