import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../helpers/ports.js';

/**
 * Crash safety with the real CLI in a child process: kill -9 during a write load must lose no
 * acknowledged commit, and a second server on the same DATA_DIR must be refused.
 */
let root: string;
let port: number;
let adminPort: number;
const children = new Set<ChildProcess>();

const env = () => ({
  ...process.env,
  DATA_DIR: path.join(root, 'data'),
  TLS_DIR: path.join(root, 'tls'),
  TEMPLATE_DIR: inject('templateDir'),
  HOST: '127.0.0.1',
  PORT: String(port),
  ADMIN_PORT: String(adminPort),
  LOG_LEVEL: 'info',
  LOG_PRETTY: 'false',
});

function cli(args: string[], extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], {
    env: { ...env(), ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  const output = () => out;
  const listening = async () => {
    while (!out.includes('"listening"')) {
      if (child.exitCode !== null) throw new Error(`server exited: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, exited, output, listening };
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'gw-crash-'));
  port = await freePort();
  adminPort = await freePort();
  for (const id of ['crash-a', 'crash-b']) {
    const created = cli(['db', 'create', id, '--password', 'secret-password']);
    expect(await created.exited).toBe(0);
  }
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await rm(root, { recursive: true, force: true });
});

const config = async (id: string): Promise<pg.ClientConfig> => ({
  host: '127.0.0.1',
  port,
  user: 'postgres',
  password: 'secret-password',
  database: 'postgres',
  ssl: { ca: await readFile(path.join(root, 'tls', 'ca.pem')), servername: `${id}.db.example.com` },
  connectionTimeoutMillis: 20_000,
});

describe('one server per data directory', () => {
  it('refuses a second server process on the same DATA_DIR', async () => {
    const first = cli(['serve']);
    await first.listening();
    const second = cli(['serve'], { PORT: String(await freePort()), ADMIN_PORT: String(await freePort()) });
    expect(await second.exited).toBe(1);
    expect(second.output()).toMatch(/in use by process/);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
  });
});

describe('kill -9', () => {
  it('loses no acknowledged commit over 10 crash cycles under an 8-client write load', {
    timeout: 300_000,
  }, async () => {
    const acked = new Map<string, Set<number>>([
      ['crash-a', new Set()],
      ['crash-b', new Set()],
    ]);
    let next = 0;
    for (let cycle = 0; cycle < 10; cycle++) {
      const server = cli(['serve']);
      await server.listening();
      if (cycle === 0) {
        for (const id of acked.keys()) {
          const c = new pg.Client(await config(id));
          await c.connect();
          await c.query('create table if not exists acked (id int primary key, filler text)');
          await c.end();
        }
      }
      let stop = false;
      const writers = Array.from({ length: 8 }, async (_, w) => {
        const id = w % 2 === 0 ? 'crash-a' : 'crash-b';
        const c = new pg.Client(await config(id));
        c.on('error', () => undefined);
        try {
          await c.connect();
          while (!stop) {
            const value = next++;
            await c.query('insert into acked values ($1, repeat($2, 200))', [value, 'x']);
            acked.get(id)?.add(value); // only after the server acknowledged the commit
          }
        } catch {
          // the crash cuts every writer off mid-flight: expected
        }
      });
      // Let the load really run (the databases open first, slowly on a busy machine), then crash.
      const total = () => [...acked.values()].reduce((n, set) => n + set.size, 0);
      const before = total();
      for (let waited = 0; total() < before + 16 && waited < 30_000; waited += 50) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, Math.random() * 500));
      server.child.kill('SIGKILL');
      stop = true;
      await server.exited;
      await Promise.all(writers);
    }
    // Every database reopens and holds every acknowledged row.
    const server = cli(['serve']);
    await server.listening();
    for (const [id, values] of acked) {
      const c = new pg.Client(await config(id));
      await c.connect();
      const { rows } = await c.query<{ id: number }>('select id from acked');
      await c.end();
      const present = new Set(rows.map((r) => r.id));
      const lost = [...values].filter((v) => !present.has(v));
      expect(values.size).toBeGreaterThan(0);
      expect(lost).toEqual([]);
    }
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  });
});
