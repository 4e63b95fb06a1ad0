import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { adminRequest } from './admin-request.js';

/**
 * The real gateway (`serve`) in a child process, for fuzzing. Unlike `startTestServer` it does
 * not share the test's event loop: a server that spins or blocks cannot stall the test's own
 * timers, the test can see whether the process is still alive, and its RSS is its own.
 */

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Log lines kept for the report (the newest; bounded). */
const MAX_KEPT_LINES = 200;

export interface GatewayProcess {
  port: number;
  adminPort: number;
  pid: number;
  ca: Buffer;
  root: string;
  /** Whether the child is still running. */
  alive(): boolean;
  /** Exit code or signal once it exited. */
  exitStatus(): string | undefined;
  /** Error/fatal log lines (level >= 50) seen so far, newest last, at most 200. */
  errorLines(): string[];
  /** Warning log lines (level 40) seen so far, newest last, at most 200. */
  warnLines(): string[];
  /** Ids of the databases the server logged as opened so far. */
  openedDatabases(): Set<string>;
  /** The last lines of output, for failure messages. */
  tail(n?: number): string;
  /** A node-postgres config for a database, routed by SNI. */
  pgConfig(id: string, password: string): pg.ClientConfig;
  /** Creates a database with the given password through the admin API. */
  createDatabase(id: string, password: string): Promise<void>;
  /** GET on the admin port; rejects after `timeoutMs`. */
  adminGet(pathname: string, timeoutMs?: number): Promise<{ status: number; body: string }>;
  /** One sample of /metrics: RSS in bytes and the open-databases / connected-clients / WAL backlog gauges. */
  metrics(
    timeoutMs?: number,
  ): Promise<{ rss: number; openDatabases: number; connectedClients: number; walBacklogBytes: number }>;
  /** SIGTERM, then SIGKILL after `graceMs`; removes the data directory. */
  close(graceMs?: number): Promise<void>;
}

export interface GatewayProcessOptions {
  /** Extra environment (LOGIN_TIMEOUT, POOL_MODE, ...). */
  env?: Record<string, string>;
  /** A prepared template (the vitest global setup provides one); otherwise the server builds it. */
  templateDir?: string;
  /** How long to wait for "listening". Default 120 s. */
  startTimeoutMs?: number;
  /**
   * The checkout whose `src/cli/index.ts serve` runs; default this repository, or
   * `FUZZ_GATEWAY_DIR` (e.g. an unpacked `git archive` of an older commit, to see a fix's effect).
   */
  repoDir?: string;
}

export async function startGatewayProcess(opts: GatewayProcessOptions = {}): Promise<GatewayProcess> {
  const root = await mkdtemp(path.join(tmpdir(), 'gw-fuzz-'));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? root,
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_PORT: '0',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    DATA_DIR: path.join(root, 'data'),
    TLS_DIR: path.join(root, 'tls'),
    LOG_LEVEL: 'info',
    LOG_PRETTY: 'false',
    SPARE_DATABASES: '1',
    WARM_ENGINES: '1',
    ...(opts.templateDir ? { TEMPLATE_DIR: opts.templateDir } : {}),
    ...opts.env,
  };
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', 'serve'], {
    cwd: opts.repoDir ?? process.env.FUZZ_GATEWAY_DIR ?? repo,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const recent: string[] = [];
  const errorLines: string[] = [];
  const warnLines: string[] = [];
  const opened = new Set<string>();
  let listening: { port: number; adminPort: number } | undefined;
  const onLine = (line: string) => {
    recent.push(line);
    if (recent.length > MAX_KEPT_LINES) recent.shift();
    let entry: { level?: number; msg?: string; port?: number; adminPort?: number; db?: string } | undefined;
    try {
      entry = JSON.parse(line);
    } catch {
      entry = undefined;
    }
    if (!entry) return;
    if (entry.msg === 'listening' && entry.port && entry.adminPort) {
      listening = { port: entry.port, adminPort: entry.adminPort };
    }
    if (entry.msg === 'database opened' && entry.db) opened.add(entry.db);
    if (entry.level === 40) {
      warnLines.push(line.length > 4000 ? `${line.slice(0, 4000)}…` : line);
      if (warnLines.length > MAX_KEPT_LINES) warnLines.shift();
    }
    if ((entry.level ?? 0) >= 50) {
      errorLines.push(line.length > 4000 ? `${line.slice(0, 4000)}…` : line);
      if (errorLines.length > MAX_KEPT_LINES) errorLines.shift();
    }
  };
  /** Splits one stream into lines (each stream keeps its own partial line). */
  const lines = () => {
    let partial = '';
    return (d: Buffer) => {
      partial += d.toString('utf8');
      let nl = partial.indexOf('\n');
      while (nl >= 0) {
        onLine(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
        nl = partial.indexOf('\n');
      }
      // A line without a newline for this long is not a log line we can use; keep memory bounded.
      if (partial.length > 1_000_000) partial = '';
    };
  };
  child.stdout?.on('data', lines());
  child.stderr?.on('data', lines());
  // A test runner that exits without closing us must not leave the server running.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let exit: string | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      process.off('exit', killOnExit);
      exit = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    }),
  );

  const deadline = Date.now() + (opts.startTimeoutMs ?? 120_000);
  while (!listening) {
    if (exit !== undefined || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(root, { recursive: true, force: true });
      throw new Error(`gateway did not start (${exit ?? 'timeout'}):\n${recent.slice(-30).join('\n')}`);
    }
    await sleep(50);
  }
  const { port, adminPort } = listening;
  const ca = await readFile(path.join(root, 'tls', 'ca.pem'));

  const request = (method: string, pathname: string, body: string | undefined, timeoutMs: number) =>
    adminRequest(adminPort, method, pathname, body, timeoutMs);

  const gauge = (text: string, name: string): number => {
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return match?.[1] ? Number(match[1]) : Number.NaN;
  };

  return {
    port,
    adminPort,
    pid: child.pid as number,
    ca,
    root,
    alive: () => exit === undefined,
    exitStatus: () => exit,
    errorLines: () => [...errorLines],
    warnLines: () => [...warnLines],
    openedDatabases: () => new Set(opened),
    tail: (n = 30) => recent.slice(-n).join('\n'),
    pgConfig: (id, password) => ({
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password,
      database: 'postgres',
      ssl: { ca, servername: `${id}.db.example.com` },
      connectionTimeoutMillis: 20_000,
    }),
    async createDatabase(id, password) {
      const res = await request('POST', '/v1/databases', JSON.stringify({ id, password }), 60_000);
      if (res.status !== 201) throw new Error(`create ${id}: ${res.status} ${res.body}`);
    },
    adminGet: (pathname, timeoutMs = 15_000) => request('GET', pathname, undefined, timeoutMs),
    async metrics(timeoutMs = 15_000) {
      const res = await request('GET', '/metrics', undefined, timeoutMs);
      return {
        rss: gauge(res.body, 'process_resident_memory_bytes'),
        openDatabases: gauge(res.body, 'pglite_gateway_open_databases'),
        connectedClients: gauge(res.body, 'pglite_gateway_connected_clients'),
        walBacklogBytes: gauge(res.body, 'pglite_gateway_wal_backlog_bytes'),
      };
    },
    async close(graceMs = 10_000) {
      if (exit === undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
