/**
 * Dev certificates for the gateway: `npm run certs -- [--dir tls] [--domain db.example.com] [--force]`.
 * A thin wrapper; the CLI's `certs` command and the dev server call the same function.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateDevCertificates } from '../src/gateway/certs.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: 'tls' },
    // Deliberately not read from WILDCARD_DOMAIN: the flag is the one source for this script.
    domain: { type: 'string', default: 'db.example.com' },
    force: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (values.help) {
  console.log('usage: generate-certs [--dir tls] [--domain db.example.com] [--force]');
  process.exit(0);
}

const result = await generateDevCertificates({
  dir: values.dir,
  domain: values.domain,
  force: values.force,
}).catch((err: unknown) => {
  console.error(`generate-certs: ${(err as Error).message}`);
  process.exit(1);
});
const rel = (p: string) => path.relative(process.cwd(), p) || p;

if (!result.generated) {
  console.log(
    `certificates already exist in ${rel(path.dirname(result.certPath))} (use --force to re-issue)`,
  );
} else {
  console.log(`${result.reusedCa ? 'kept  ' : 'wrote '} ${rel(result.caPath)}  (CA: give this to clients)`);
  console.log(`wrote  ${rel(result.certPath)}  (server certificate for *.${values.domain})`);
  console.log(`wrote  ${rel(result.keyPath)}  (server key, mode 0600)`);
}
console.log('\nconnect with:');
console.log(
  `  psql "host=<id>.${values.domain} hostaddr=127.0.0.1 port=5432 sslmode=verify-full sslrootcert=${rel(result.caPath)}"`,
);
