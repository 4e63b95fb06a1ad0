import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { execFileAsync, freePort, sleep } from '../tools.js';
import type { SystemUnderTest, Target } from './types.js';

/**
 * Native PostgreSQL 15 from the Debian binaries as the physical reference: initdb in a temp dir,
 * the stock configuration with fsync, synchronous_commit and full_page_writes on (unlike the
 * test helper, which turns them off for speed), trust authentication over plaintext TCP on
 * 127.0.0.1. As root, postgres runs as the `postgres` user via runuser. Adapted from
 * test/helpers/postgres.ts.
 */

const asRoot = process.getuid?.() === 0;

function command(bin: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function canConnect(config: pg.ClientConfig): Promise<boolean> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: 1000 });
  client.on('error', () => undefined);
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

function signal(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Signals the postmaster itself: runuser does not forward SIGINT. */
async function stopPostmaster(child: ChildProcess, dataDir: string): Promise<void> {
  const pidFile = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
  const parsed = Number.parseInt(pidFile.split('\n')[0] ?? '', 10);
  const postmaster = Number.isInteger(parsed) && parsed > 0 ? parsed : child.pid;
  signal(postmaster, 'SIGINT');
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

function pgConfigFor(port: number, database: string): pg.ClientConfig {
  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database,
    ssl: false,
    connectionTimeoutMillis: 30_000,
  };
}

export async function startPostgres(binDir: string): Promise<SystemUnderTest> {
  // The temp dir is also the socket directory (-k), whose path must stay short.
  const root = await mkdtemp(path.join(tmpdir(), 'bench-pg-'));
  const dataDir = path.join(root, 'data');
  let child: ChildProcess | undefined;
  try {
    if (asRoot) {
      await execFileAsync('chown', ['postgres:', root]);
      await chmod(root, 0o700);
    }
    const [initCmd, initArgs] = command(path.join(binDir, 'initdb'), [
      ...['-D', dataDir, '-U', 'postgres', '--auth=trust'],
      ...['--encoding=UTF8', '--locale=C', '--no-instructions'],
    ]);
    await execFileAsync(initCmd, initArgs, { cwd: root });

    let port = 0;
    let stderr = '';
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const [cmd, args] = command(path.join(binDir, 'postgres'), [
        ...['-D', dataDir, '-p', String(port), '-k', root],
        ...['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=on', '-c', 'synchronous_commit=on'],
        ...['-c', 'full_page_writes=on'],
      ]);
      const started = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
      child = started;
      started.stderr?.on('data', (chunk: Buffer) => {
        stderr = (stderr + chunk.toString()).slice(-4000);
      });
      const deadline = Date.now() + 30_000;
      let up = false;
      while (started.exitCode === null && started.signalCode === null && Date.now() < deadline) {
        if (await canConnect(pgConfigFor(port, 'postgres'))) {
          up = true;
          break;
        }
        await sleep(100);
      }
      if (up) break;
      if (started.exitCode === null && started.signalCode === null) {
        throw new Error(`postgres did not accept connections within 30 s:\n${stderr}`);
      }
      if (!/already in use/i.test(stderr) || attempt >= 3) {
        throw new Error(`postgres exited with ${started.exitCode ?? started.signalCode}:\n${stderr}`);
      }
    }

    const server = child as ChildProcess;
    let stopping: Promise<void> | undefined;
    return {
      kind: 'postgres',
      description:
        'PostgreSQL 15 (Debian binaries), stock config, fsync/synchronous_commit/full_page_writes on: plaintext, trust authentication',
      async createDatabase(name: string): Promise<Target> {
        const admin = new pg.Client(pgConfigFor(port, 'postgres'));
        await admin.connect();
        try {
          await admin.query(`create database "${name.replaceAll('"', '')}"`);
        } finally {
          await admin.end();
        }
        return {
          name,
          conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=${name} sslmode=disable`,
          env: {},
          pgConfig: pgConfigFor(port, name),
        };
      },
      async recover(): Promise<void> {
        // A failed pgbench run leaves nothing behind in a real server.
      },
      stop() {
        stopping ??= stopPostmaster(server, dataDir).finally(() =>
          rm(root, { recursive: true, force: true }),
        );
        return stopping;
      },
    };
  } catch (err) {
    if (child) await stopPostmaster(child, dataDir).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}
