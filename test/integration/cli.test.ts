import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectionDefaults } from '../../src/admin/connection-info.js';
import { DatabaseManager } from '../../src/admin/service.js';
import type { Catalog } from '../../src/catalog/catalog.js';
import { openEmbeddedCatalog } from '../../src/catalog/embedded.js';
import { loadConfig } from '../../src/config.js';
import { createAdminApp } from '../../src/http/app.js';
import { type AdminServer, startAdmin } from '../../src/http/server.js';
import { acquireDataDirLock, type DataDirLock } from '../../src/pgdata/dir-lock.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI in a child process with a minimal, explicit environment. */
function cli(env: Record<string, string>, ...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/index.ts', ...args],
      { cwd: repo, env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function makeEnv(prefix: string) {
  const root = await mkdtemp(path.join(tmpdir(), prefix));
  const env = {
    DATA_DIR: path.join(root, 'dbs'),
    TEMPLATE_DIR: inject('templateDir'),
    TLS_DIR: path.join(root, 'tls'),
    WILDCARD_DOMAIN: 'db.test',
    PORT: '6432',
  };
  return { root, env };
}

// Each CLI run starts Node + tsx and (locally) opens the embedded catalog: seconds, not milliseconds.
describe('cli without a running server', { timeout: 180_000 }, () => {
  let root = '';
  let env: Record<string, string> = {};
  beforeAll(async () => {
    ({ root, env } = await makeEnv('cli-local-'));
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('prints usage and exits 2 on bad command lines', async () => {
    expect(await cli(env, '--help')).toMatchObject({
      code: 0,
      stdout: expect.stringContaining('db create <id>'),
    });
    for (const args of [
      ['nope'],
      ['db'],
      ['db', 'create'],
      ['db', 'list', 'x'],
      ['db', 'create', 'a', '--bad'],
    ]) {
      const res = await cli(env, ...args);
      expect(res.code, args.join(' ')).toBe(2);
      expect(res.stderr).toMatch(/^error: /);
    }
  });

  it('creates a database and prints verify-full connection info', async () => {
    const res = await cli(env, 'db', 'create', 'app1', '--user', 'alice');
    expect(res).toMatchObject({ code: 0, stderr: '' });
    const ca = path.join(env.TLS_DIR as string, 'ca.pem');
    const password = /password: +(\S+)/.exec(res.stdout)?.[1] ?? '';
    expect(password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(res.stdout).toContain(
      `postgres://alice:${password}@app1.db.test:6432/postgres?sslmode=verify-full&sslrootcert=${ca}`,
    );
    expect(res.stdout).toContain(
      `psql "host=app1.db.test hostaddr=127.0.0.1 port=6432 user=alice password=${password} dbname=postgres ` +
        `sslmode=verify-full sslrootcert=${ca}"`,
    );
    expect(await exists(path.join(env.DATA_DIR as string, 'app1', 'PG_VERSION'))).toBe(true);
    // The lock is released when the command ends.
    expect(await exists(path.join(env.DATA_DIR as string, 'gateway.lock'))).toBe(false);
  });

  it('lists, rotates passwords and fails cleanly', async () => {
    await cli(env, 'db', 'create', 'app2', '--read-only');
    const list = await cli(env, 'db', 'list');
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID +READ-ONLY +CREATED\napp1 +no +\S+\napp2 +yes +\S+\n$/);

    const passwd = await cli(env, 'db', 'passwd', 'app1', '--user', 'alice', '--password', 'n3w pass phrase');
    expect(passwd.code).toBe(0);
    expect(passwd.stdout).toContain('postgres://alice:n3w%20pass%20phrase@app1.db.test:6432/');
    expect(passwd.stdout).toContain("password='n3w pass phrase'");

    const dup = await cli(env, 'db', 'create', 'app1');
    expect(dup).toMatchObject({ code: 1, stderr: 'error: database "app1" already exists\n' });
    const tooShort = 'error: password must be at least 12 characters long\n';
    const short = await cli(env, 'db', 'passwd', 'app1', '--password', 'n3w pass');
    expect(short).toMatchObject({ code: 1, stderr: tooShort });
    const tiny = await cli(env, 'db', 'create', 'app3', '--password', 'x');
    expect(tiny).toMatchObject({ code: 1, stderr: tooShort });
    const missing = await cli(env, 'db', 'passwd', 'nope');
    expect(missing).toMatchObject({ code: 1, stderr: 'error: database "nope" does not exist\n' });
    const bad = await cli(env, 'db', 'delete', '../x');
    expect(bad.code).toBe(1);
    expect(bad.stderr).not.toContain('    at ');
  });

  it('deletes databases', async () => {
    expect(await cli(env, 'db', 'delete', 'app1')).toMatchObject({
      code: 0,
      stdout: 'deleted database "app1"\n',
    });
    await cli(env, 'db', 'delete', 'app2');
    expect(await exists(path.join(env.DATA_DIR as string, 'app1'))).toBe(false);
    expect((await cli(env, 'db', 'list')).stdout).toBe('no databases\n');
  });

  it('generates dev certificates', async () => {
    const res = await cli(env, 'certs');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(path.join(env.TLS_DIR as string, 'ca.pem'));
    expect(await exists(path.join(env.TLS_DIR as string, 'key.pem'))).toBe(true);
    expect((await cli(env, 'certs')).stdout).toContain('already exist');
  });

  it('prints usage on stderr and exits 2 without arguments; --help per command', async () => {
    const none = await cli(env);
    expect(none.code).toBe(2);
    expect(none.stdout).toBe('');
    expect(none.stderr).toContain('usage: pglite-gateway <command>');
    const helps: [string[], string[]][] = [
      [
        ['serve', '--help'],
        ['usage: pglite-gateway serve', 'DRAIN_TIMEOUT'],
      ],
      [
        ['db', 'create', '--help'],
        ['usage: pglite-gateway db create <id>', '--read-only', '--user U', '--password P'],
      ],
      [
        ['db', 'set', 'x', '-h'],
        ['--writable', '--pool-mode M'],
      ],
      [
        ['db', 'clone', '--help'],
        ['--version V', 'ARCHIVE_URL'],
      ],
      [
        ['upload', '--help'],
        ['usage: pglite-gateway upload <id> <file>', '--create'],
      ],
      [['certs', '--help'], ['--force']],
    ];
    for (const [args, expected] of helps) {
      const res = await cli(env, ...args);
      expect(res, args.join(' ')).toMatchObject({ code: 0, stderr: '' });
      for (const text of expected) expect(res.stdout, args.join(' ')).toContain(text);
    }
  });

  it('says the port is not known without a server and without PORT; refuses reserved ids', async () => {
    const { PORT: _, ...noPort } = env;
    const res = await cli(noPort, 'db', 'create', 'noport');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('@noport.db.test/postgres?sslmode=verify-full');
    expect(res.stdout).toMatch(/psql "host=noport\.db\.test hostaddr=127\.0\.0\.1 user=postgres /);
    expect(res.stdout).not.toContain('5432');
    expect(res.stderr).toMatch(/^note: no server is running, so its port is not known: PORT is not set here/);
    const zero = await cli({ ...noPort, PORT: '0' }, 'db', 'passwd', 'noport');
    expect(zero.code).toBe(0);
    expect(zero.stdout).not.toContain('port=');
    expect(zero.stderr).toMatch(/PORT=0/);
    expect((await cli(env, 'db', 'delete', 'noport')).code).toBe(0);

    expect(await cli(env, 'db', 'create', 'postgres')).toMatchObject({
      code: 1,
      stderr: 'error: database id "postgres" is reserved\n',
    });
  });
});

describe('cli while a server holds the data directory', { timeout: 180_000 }, () => {
  let root = '';
  let env: Record<string, string> = {};
  let lock: DataDirLock | undefined;
  let catalog: Catalog | undefined;
  let admin: AdminServer | undefined;
  let socketPath = '';

  beforeAll(async () => {
    ({ root, env } = await makeEnv('cli-live-'));
    const config = loadConfig(env, false);
    socketPath = config.admin.socketPath;
    await mkdir(config.dataDir, { recursive: true });
    // Stands in for `serve`: the lock, the one catalog instance, and the admin API on its socket.
    lock = await acquireDataDirLock(config.dataDir, 'test-server');
    catalog = await openEmbeddedCatalog({
      dir: path.join(config.dataDir, '_catalog'),
      templateDir: config.templateDir,
    });
    const manager = new DatabaseManager({
      catalog,
      dataDir: config.dataDir,
      templateDir: config.templateDir,
    });
    const logger = pino({ level: 'silent' });
    // A token that the CLI does not know: the socket must be trusted without it.
    const app = createAdminApp({
      manager,
      metrics: new Registry(),
      connection: connectionDefaults(config),
      token: 'x',
    });
    admin = await startAdmin({ app, host: '127.0.0.1', port: 0, socketPath, logger });
  });
  afterAll(async () => {
    await admin?.close();
    await catalog?.close();
    await lock?.release();
    await rm(root, { recursive: true, force: true });
  });

  it('serves the admin socket with mode 0600', async () => {
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
  });

  it('creates, lists, rotates and deletes through the socket', async () => {
    const created = await cli(env, 'db', 'create', 'live1');
    expect(created).toMatchObject({ code: 0, stderr: '' });
    expect(created.stdout).toContain('@live1.db.test:6432/postgres?sslmode=verify-full');
    // Visible through the server's own catalog instance: the CLI did not open a second one.
    expect(await catalog?.getDatabase('live1')).toMatchObject({ id: 'live1', readOnly: false });

    expect((await cli(env, 'db', 'list')).stdout).toMatch(/^ID +READ-ONLY +CREATED\nlive1 +no +\S+\n$/);

    const before = await catalog?.getCredential('live1', 'postgres');
    const passwd = await cli(env, 'db', 'passwd', 'live1');
    expect(passwd.code).toBe(0);
    expect((await catalog?.getCredential('live1', 'postgres'))?.scram).not.toEqual(before?.scram);

    const dup = await cli(env, 'db', 'create', 'live1');
    expect(dup).toMatchObject({ code: 1, stderr: 'error: database "live1" already exists\n' });
    // Through the socket the server's manager refuses it (HTTP 400), with the same message.
    expect(await cli(env, 'db', 'passwd', 'live1', '--password', 'too-short')).toMatchObject({
      code: 1,
      stderr: 'error: password must be at least 12 characters long\n',
    });

    expect((await cli(env, 'db', 'delete', 'live1')).code).toBe(0);
    expect(await catalog?.getDatabase('live1')).toBeUndefined();
    expect(await cli(env, 'db', 'delete', 'live1')).toMatchObject({
      code: 1,
      stderr: 'error: database "live1" does not exist\n',
    });
  });

  it('reports an unreachable server instead of opening the data directory', async () => {
    await admin?.close();
    admin = undefined;
    expect(await exists(socketPath)).toBe(false);
    const res = await cli(env, 'db', 'list');
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`in use by process ${process.pid}`);
    expect(res.stderr).toContain('is not answering');
  });
});
