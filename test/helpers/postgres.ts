import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './ports.js';

/**
 * A real, throwaway PostgreSQL 15 from the Debian binaries: own temp PGDATA, own port, own socket
 * directory. Integration tests start one per file (`startPostgres`, durability off for speed) and
 * share it only through `createTestDatabase`; the benchmarks start one as the physical reference
 * (`startPostgres15` with `durable`, bench/systems/postgres.ts). Trust authentication over
 * plaintext TCP on 127.0.0.1.
 */

const run = promisify(execFile);

export interface TestPostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres — superuser, no password (trust auth). */
  url: string;
  /** Fast shutdown (SIGINT), waits for exit, removes the temp directory. Idempotent. */
  stop(): Promise<void>;
}

/** Where initdb and postgres are: PG_BIN_DIR, or the Debian PostgreSQL 15 location. */
export function postgresBinDir(): string {
  return process.env.PG_BIN_DIR ?? '/usr/lib/postgresql/15/bin';
}

/** Which of the server binaries (initdb, postgres) `dir` lacks. */
export function missingPostgresBinaries(dir: string): string[] {
  return ['initdb', 'postgres'].filter((bin) => !existsSync(path.join(dir, bin)));
}

function binDir(): string {
  const dir = postgresBinDir();
  const [missing] = missingPostgresBinaries(dir);
  if (missing !== undefined) {
    throw new Error(
      `PostgreSQL binary ${missing} not found in ${dir}; install it (apt-get install -y postgresql-15) or set PG_BIN_DIR`,
    );
  }
  return dir;
}

/** Postgres refuses to run as root, so as root every server command runs as the postgres user. */
const asRoot = process.getuid?.() === 0;

function command(bin: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** The superuser's connection settings for `database` on the server at `port`. */
export function postgresConfig(port: number, database = 'postgres'): pg.ClientConfig {
  return { host: '127.0.0.1', port, user: 'postgres', database, ssl: false };
}

async function canConnect(port: number): Promise<boolean> {
  const client = new pg.Client({ ...postgresConfig(port), connectionTimeoutMillis: 1000 });
  // An 'error' after a failed connect would otherwise be unhandled.
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Starts postgres on a free port; resolves once it answers queries, rejects if it exits first. */
async function startServer(
  bin: string,
  root: string,
  dataDir: string,
  durability: 'on' | 'off',
): Promise<{ child: ChildProcess; port: number }> {
  // The port may be taken between probe and bind by another parallel test; retry a few times.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const [cmd, args] = command(path.join(bin, 'postgres'), [
      ...['-D', dataDir, '-p', String(port), '-k', root],
      ...['-c', 'listen_addresses=127.0.0.1', '-c', `fsync=${durability}`],
      ...['-c', `synchronous_commit=${durability}`, '-c', `full_page_writes=${durability}`],
    ]);
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    const deadline = Date.now() + 30_000;
    while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) {
      if (await canConnect(port)) return { child, port };
      await sleep(100);
    }
    if (child.exitCode === null && child.signalCode === null) {
      await stopServer(child, dataDir);
      throw new Error(`postgres did not accept connections within 30 s:\n${stderr}`);
    }
    if (!/already in use/i.test(stderr) || attempt >= 3) {
      throw new Error(`postgres exited with ${child.exitCode ?? child.signalCode}:\n${stderr}`);
    }
  }
}

function signal(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/**
 * Signals the postmaster itself (pid from postmaster.pid): `runuser` ignores SIGINT instead of
 * forwarding it, and turns SIGTERM into SIGTERM-then-SIGKILL of its child after 2 s.
 */
async function stopServer(child: ChildProcess, dataDir: string): Promise<void> {
  const pidFile = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
  const parsed = Number.parseInt(pidFile.split('\n')[0] ?? '', 10);
  const postmaster = Number.isInteger(parsed) && parsed > 0 ? parsed : child.pid;
  signal(postmaster, 'SIGINT');
  // Fast shutdown should take well under a second; escalate to immediate shutdown if it hangs.
  const timer = setTimeout(() => {
    signal(postmaster, 'SIGQUIT');
    child.kill('SIGKILL');
  }, 15_000);
  try {
    await exited(child);
  } finally {
    clearTimeout(timer);
  }
}

export interface Postgres15Options {
  /** Directory with initdb and postgres. Default: `postgresBinDir()`, checked. */
  binDir?: string;
  /** Prefix of the temp directory (PGDATA and socket directory). Default 'pg15-'. */
  tempPrefix?: string;
  /**
   * fsync, synchronous_commit and full_page_writes on (the stock configuration, for a benchmark
   * reference) instead of off, and initdb without --no-sync. Default false (tests: speed).
   */
  durable?: boolean;
}

export interface Postgres15 {
  /** The TCP port on 127.0.0.1; user postgres, trust authentication (see `postgresConfig`). */
  port: number;
  /** Fast shutdown (SIGINT), waits for exit, removes the temp directory. Idempotent. */
  stop(): Promise<void>;
}

/** initdb into a temp directory and start postgres on a free port (as `postgres` when root). */
export async function startPostgres15(options: Postgres15Options = {}): Promise<Postgres15> {
  const bin = options.binDir ?? binDir();
  // The temp dir doubles as the socket directory (-k), whose path must stay short (~100 bytes).
  const root = await mkdtemp(path.join(tmpdir(), options.tempPrefix ?? 'pg15-'));
  const dataDir = path.join(root, 'data');
  try {
    if (asRoot) {
      await run('chown', ['postgres:', root]);
      await chmod(root, 0o700);
    }
    const [cmd, args] = command(path.join(bin, 'initdb'), [
      ...['-D', dataDir, '-U', 'postgres', '--auth=trust'],
      ...['--encoding=UTF8', '--locale=C', ...(options.durable ? [] : ['--no-sync']), '--no-instructions'],
    ]);
    await run(cmd, args, { cwd: root });
    const { child, port } = await startServer(bin, root, dataDir, options.durable ? 'on' : 'off');
    let stopping: Promise<void> | undefined;
    return {
      port,
      stop: () => {
        stopping ??= stopServer(child, dataDir).finally(() => rm(root, { recursive: true, force: true }));
        return stopping;
      },
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

/** A PostgreSQL 15 for one test file, durability off for speed. */
export async function startPostgres(): Promise<TestPostgres> {
  const server = await startPostgres15();
  return { url: `postgres://postgres@127.0.0.1:${server.port}/postgres`, stop: server.stop };
}

/** Creates a uniquely named database on the server at `url` and returns its URL. */
export async function createTestDatabase(url: string): Promise<string> {
  const name = `test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const dbUrl = new URL(url);
  dbUrl.pathname = `/${name}`;
  return dbUrl.toString();
}
