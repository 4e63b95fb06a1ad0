import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { generateDevCertificates } from '../../src/gateway/certs.js';
import { createLogger } from '../../src/log.js';
import { ensureTemplate, pgliteVersion } from '../../src/pgdata/template.js';
import { type RunningServer, startServer } from '../../src/server.js';
import type { SystemUnderTest, Target } from './types.js';

/**
 * This project's gateway, in this process, exactly as `serve` wires it: TLS (dev CA, SNI routing
 * with `sslmode=verify-full`), SCRAM-SHA-256, transaction pool mode, logs off. Its own temp
 * DATA_DIR and TLS_DIR; the PGlite template is cached under the OS temp dir between runs.
 */

/** Where benchmarks keep a PGlite template between runs, keyed by the PGlite version. */
export function cachedTemplateDir(): string {
  return path.join(tmpdir(), `pglite-gateway-bench-template-${pgliteVersion()}`);
}

/** A template for this PGlite version: the given one, or the cached one (built if needed). */
export async function benchTemplate(templateDir?: string): Promise<string> {
  return ensureTemplate(templateDir ?? cachedTemplateDir());
}

export interface GatewaySystem extends SystemUnderTest {
  readonly server: RunningServer;
  readonly caPath: string;
  readonly ca: Buffer;
  readonly port: number;
}

export interface GatewayOptions {
  templateDir?: string;
  /** Extra gateway environment (e.g. IDLE_TIMEOUT). */
  env?: Record<string, string>;
  /**
   * Set up like pglite-socket (the `gateway-matched` system): clients connect in plaintext
   * (`sslmode=disable`, the database named by dbname), FSYNC=off and SHARED_BUFFERS=128MiB.
   * SCRAM-SHA-256 stays: it costs only at connect.
   */
  matched?: boolean;
}

/** What `matched` sets; opts.env still wins. */
const MATCHED_ENV = { TLS_MODE: 'prefer', FSYNC: 'off', SHARED_BUFFERS: '128MiB' };

export async function startGateway(opts: GatewayOptions = {}): Promise<GatewaySystem> {
  const root = await mkdtemp(path.join(tmpdir(), 'bench-gateway-'));
  try {
    const tlsDir = path.join(root, 'tls');
    const { caPath } = await generateDevCertificates({ dir: tlsDir, domain: 'db.example.com' });
    const ca = await readFile(caPath);
    const env: Record<string, string> = {
      PORT: '0',
      HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      HTTP_PORT: '0',
      HTTP_HOST: '127.0.0.1',
      DATA_DIR: path.join(root, 'data'),
      TLS_DIR: tlsDir,
      TEMPLATE_DIR: await benchTemplate(opts.templateDir),
      // Databases stay open for the whole run, as they would under steady load.
      IDLE_TIMEOUT: '1h',
      // BENCH_GATEWAY_LOG=info shows what the gateway did (timings of opens and fetches).
      LOG_LEVEL: process.env.BENCH_GATEWAY_LOG ?? 'silent',
      LOG_PRETTY: 'false',
      NODE_ENV: 'development',
      // What the extensions cost is measured by running the bench with EXTENSIONS=none and without.
      ...(process.env.EXTENSIONS ? { EXTENSIONS: process.env.EXTENSIONS } : {}),
      // And what FSYNC=on costs by running it with FSYNC=off and on.
      ...(process.env.FSYNC ? { FSYNC: process.env.FSYNC } : {}),
      // And what the 2 MiB default of SHARED_BUFFERS costs against pglite-socket's 128 MB.
      ...(process.env.SHARED_BUFFERS ? { SHARED_BUFFERS: process.env.SHARED_BUFFERS } : {}),
      ...(opts.matched ? MATCHED_ENV : {}),
      ...opts.env,
    };
    const config = loadConfig(env);
    const server = await startServer(
      config,
      createLogger({ level: env.LOG_LEVEL ?? 'silent', pretty: false }),
    );
    const port = server.port;
    let stopping: Promise<void> | undefined;
    const settings = `transaction pool mode, FSYNC=${config.fsync ? 'on' : 'off'}, SHARED_BUFFERS=${Math.round(config.sharedBuffersBytes / 1024 / 1024)}MiB`;
    return {
      kind: opts.matched ? 'gateway-matched' : 'gateway',
      description: opts.matched
        ? `this gateway, in-process, set up like pglite-socket: plaintext (sslmode=disable) + SCRAM-SHA-256, ${settings}`
        : `this gateway, in-process: TLS (verify-full, SNI routing) + SCRAM-SHA-256, ${settings}`,
      server,
      caPath,
      ca,
      port,
      async createDatabase(name: string): Promise<Target> {
        const password = `bench-${randomBytes(9).toString('base64url')}`;
        await server.manager.create(name, { password });
        if (opts.matched) return plaintextTarget(name, port, password);
        return {
          name,
          conninfo: [
            `host=${name}.db.example.com`,
            'hostaddr=127.0.0.1',
            `port=${port}`,
            'user=postgres',
            'dbname=postgres',
            'sslmode=verify-full',
            `sslrootcert=${caPath}`,
          ].join(' '),
          env: { PGPASSWORD: password },
          pgConfig: {
            host: '127.0.0.1',
            port,
            user: 'postgres',
            password,
            database: 'postgres',
            ssl: { ca, servername: `${name}.db.example.com` },
            connectionTimeoutMillis: 30_000,
          },
        };
      },
      async recover(target: Target): Promise<void> {
        // Closing disconnects leftover clients; the next client reopens the database.
        await server.registry.close(target.name);
      },
      stop() {
        stopping ??= server.close().finally(() => rm(root, { recursive: true, force: true }));
        return stopping;
      },
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

/** A database of the matched gateway: plaintext, the database named by dbname (no SNI). */
function plaintextTarget(name: string, port: number, password: string): Target {
  return {
    name,
    conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=${name} sslmode=disable`,
    env: { PGPASSWORD: password },
    pgConfig: {
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password,
      database: name,
      ssl: false,
      connectionTimeoutMillis: 30_000,
    },
  };
}
