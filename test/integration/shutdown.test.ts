import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../helpers/ports.js';

/** The real CLI `serve` in a child process, so SIGTERM and the exit code are the real ones. */
let root: string;
let child: ChildProcess | undefined;
const env = () => ({
  ...process.env,
  DATA_DIR: path.join(root, 'data'),
  TLS_DIR: path.join(root, 'tls'),
  TEMPLATE_DIR: inject('templateDir'),
  HOST: '127.0.0.1',
  LOG_LEVEL: 'info',
  LOG_PRETTY: 'false',
  DRAIN_TIMEOUT: '20s',
});

function cli(args: string[], extraEnv: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], {
    env: { ...env(), ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function output(proc: ChildProcess): Promise<{ code: number | null; stdout: string }> {
  let stdout = '';
  proc.stdout?.on('data', (d) => {
    stdout += d;
  });
  return new Promise((resolve) => proc.on('exit', (code) => resolve({ code, stdout })));
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'gw-shutdown-'));
});
afterAll(async () => {
  child?.kill('SIGKILL');
  await rm(root, { recursive: true, force: true });
});

describe('graceful shutdown', () => {
  it('lets a running transaction commit after SIGTERM, then exits 0', async () => {
    const created = await output(cli(['db', 'create', 'shut', '--password', 'secret-password']));
    expect(created.code).toBe(0);
    const port = await freePort();
    const adminPort = await freePort();
    child = cli(['serve'], { PORT: String(port), ADMIN_PORT: String(adminPort) });
    const exited = output(child);
    let log = '';
    child.stdout?.on('data', (d) => {
      log += d;
    });
    while (!log.includes('"listening"')) await new Promise((r) => setTimeout(r, 100));

    const ca = await readFile(path.join(root, 'tls', 'ca.pem'));
    const client = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password: 'secret-password',
      database: 'postgres',
      ssl: { ca, servername: 'shut.db.example.com' },
    });
    client.on('error', () => undefined);
    await client.connect();
    await client.query('create table t (v int)');
    await client.query('begin');
    await client.query('insert into t values (1)');

    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    // New connections are refused while draining...
    const late = new pg.Client({ host: '127.0.0.1', port, connectionTimeoutMillis: 2000 });
    late.on('error', () => undefined);
    await expect(late.connect()).rejects.toThrow();
    // ...but the open transaction may finish.
    await client.query('commit').catch((err) => {
      throw new Error(`${err.message}\n${log}`);
    });
    await client.end().catch(() => undefined);
    const { code, stdout } = await exited;
    child = undefined;
    expect(code).toBe(0);
    expect(stdout).toMatch(/"stopped"/);

    // The commit survived: a new server sees it.
    child = cli(['serve'], { PORT: String(port), ADMIN_PORT: String(adminPort) });
    const again = output(child);
    log = '';
    child.stdout?.on('data', (d) => {
      log += d;
    });
    while (!log.includes('"listening"')) await new Promise((r) => setTimeout(r, 100));
    const check = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password: 'secret-password',
      database: 'postgres',
      ssl: { ca, servername: 'shut.db.example.com' },
    });
    await check.connect();
    expect((await check.query('select count(*)::int as n from t')).rows[0].n).toBe(1);
    await check.end();
    child.kill('SIGINT');
    expect((await again).code).toBe(0);
    child = undefined;
  });
});
