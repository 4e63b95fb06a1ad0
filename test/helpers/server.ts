import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pg from 'pg';
import { type Logger, pino } from 'pino';
import { inject } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { generateDevCertificates } from '../../src/gateway/certs.js';
import { type RunningServer, startServer } from '../../src/server.js';

/** A real gateway on port 0 with its own data dir and dev certificates, for one test file. */
export interface TestServer {
  port: number;
  /** The HTTPS front door (SQL over HTTP, WebSocket). */
  httpPort: number;
  server: RunningServer;
  dataDir: string;
  root: string;
  ca: Buffer;
  caPath: string;
  env: Record<string, string>;
  /** Error-level log records the server wrote (whatever LOG_LEVEL prints): internal failures. */
  errorLogs: Record<string, unknown>[];
  /** Creates a database with a known password. */
  createDatabase(id: string, opts?: { readOnly?: boolean; password?: string }): Promise<string>;
  /** A node-postgres client config routed by SNI. */
  pgConfig(id: string, password: string, extra?: Partial<pg.ClientConfig>): pg.ClientConfig;
  /** Restarts on the same data dir and port. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const root = await mkdtemp(path.join(tmpdir(), 'gw-test-'));
  const tlsDir = path.join(root, 'tls');
  const dataDir = path.join(root, 'data');
  await generateDevCertificates({ dir: tlsDir, domain: 'db.example.com' });
  const caPath = path.join(tlsDir, 'ca.pem');
  const ca = await readFile(caPath);
  const fullEnv: Record<string, string> = {
    PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    TLS_DIR: tlsDir,
    TEMPLATE_DIR: inject('templateDir'),
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    LOG_PRETTY: 'false',
    SPARE_DATABASES: '1',
    WARM_ENGINES: '1',
    ...env,
  };
  const errorLogs: Record<string, unknown>[] = [];
  const logger = capturingLogger(fullEnv.LOG_LEVEL as string, errorLogs);
  let server = await startServer(loadConfig(fullEnv), logger).catch(async (err: unknown) => {
    await rm(root, { recursive: true, force: true });
    throw err;
  });
  const handle: TestServer = {
    port: server.port,
    httpPort: server.httpPort,
    server,
    dataDir,
    root,
    ca,
    caPath,
    env: fullEnv,
    errorLogs,
    async createDatabase(id, opts = {}) {
      // At least MIN_PASSWORD_LENGTH (12) long.
      const password = opts.password ?? `pw-${id}-password`;
      await handle.server.manager.create(id, { password, readOnly: opts.readOnly ?? false });
      return password;
    },
    pgConfig(id, password, extra = {}) {
      return {
        host: '127.0.0.1',
        port: handle.port,
        user: 'postgres',
        password,
        database: 'postgres',
        ssl: { ca, servername: `${id}.db.example.com` },
        connectionTimeoutMillis: 20_000,
        ...extra,
      };
    },
    async restart() {
      await server.close();
      server = await startServer(
        loadConfig({ ...fullEnv, PORT: String(handle.port), HTTP_PORT: String(handle.httpPort) }),
        logger,
      );
      handle.server = server;
    },
    async close() {
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
  return handle;
}

const execFileAsync = promisify(execFile);

/** Runs the real psql; resolves with stdout/stderr and the exit code (never throws on SQL errors). */
export async function psql(
  conninfo: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await execFileAsync(
      'psql',
      [conninfo, '-X', '-v', 'ON_ERROR_STOP=1', ...args],
      {
        env: { ...process.env, PGCONNECT_TIMEOUT: '20', ...env },
        timeout: 60_000,
      },
    );
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

/** Connects with node-postgres, runs fn, always ends the client. */
export async function withClient<T>(config: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The SQLSTATE of a failed connect/query, for asserting on errors. */
export async function sqlstateOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

/**
 * The server's logger: prints what `level` asks for (TEST_LOG_LEVEL; silent by default) and
 * keeps every error-level record, so a test can tell that nothing was logged as internal.
 */
function capturingLogger(level: string, errors: Record<string, unknown>[]): Logger {
  const printed = pino.levels.values[level] ?? Number.POSITIVE_INFINITY;
  const error = 50;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const line = chunk.toString();
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        if (typeof record.level === 'number' && record.level >= error) errors.push(record);
        if (typeof record.level === 'number' && record.level >= printed) process.stdout.write(line);
      } catch {
        process.stdout.write(line);
      }
      done();
    },
  });
  return pino({ level: printed < error ? level : 'error' }, sink);
}
