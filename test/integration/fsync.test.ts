import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** strace is installed by .ci/run; without it the traced ordering test cannot run. */
const hasStrace = spawnSync('strace', ['-V']).status === 0;

/**
 * FSYNC (issue 14): with `on`, the WAL a commit wrote is fdatasync'ed in the database's worker
 * before the reply leaves it, so by the time a client has its CommandComplete the sync happened;
 * data files are synced before a checkpoint is recorded. With `off`, nothing is synced.
 */

describe.each([
  ['on', true],
  ['off', false],
])('FSYNC=%s', (mode, syncs) => {
  let t: TestServer;
  let pw: string;
  beforeAll(async () => {
    t = await startTestServer({ FSYNC: mode });
    pw = await t.createDatabase('durable');
  });
  afterAll(() => t?.close());

  it(syncs ? 'flushes the WAL of every commit before acknowledging it' : 'never syncs', async () => {
    await withClient(t.pgConfig('durable', pw), async (c) => {
      await c.query('create table if not exists ledger (n int)');
      for (let i = 0; i < 20; i++) {
        const before = t.server.engines.syncs.wal;
        await c.query('insert into ledger values ($1)', [i]);
        const after = t.server.engines.syncs.wal;
        // Read right after the acknowledgement: the sync already happened, or never will.
        if (syncs) expect(after, `commit ${i}`).toBeGreaterThan(before);
        else expect(after).toBe(0);
      }
      // A transaction's statements before COMMIT wrote no commit record that needs a wait.
      const dataBefore = t.server.engines.syncs.data;
      await c.query('checkpoint');
      if (syncs) expect(t.server.engines.syncs.data).toBeGreaterThan(dataBefore);
      else expect(t.server.engines.syncs.data).toBe(0);
      expect((await c.query('select count(*)::int as n from ledger')).rows[0].n).toBe(20);
    });
  });
});

/**
 * The ordering itself, seen from outside the process: strace follows every thread of a gateway
 * process (plain TCP, so the replies are readable) and records, in the order they happened, the
 * fdatasync calls on WAL segments and the socket writes that carry a commit's CommandComplete. With
 * `on`, a WAL fdatasync has returned before each such write starts; with `off` there is none.
 */
describe.each(['on', 'off'] as const)('FSYNC=%s, traced', (mode) => {
  let g: GatewayProcess | undefined;
  let tracer: ChildProcess | undefined;
  let traceFile = '';
  afterAll(async () => {
    tracer?.kill('SIGINT');
    await g?.close(0);
    if (traceFile) await rm(traceFile, { force: true });
  });

  it.skipIf(!hasStrace)(
    mode === 'on'
      ? 'flushes each commit WAL before its CommandComplete is written'
      : 'writes replies unsynced',
    async () => {
      g = await startGatewayProcess({
        env: { FSYNC: mode, TLS_MODE: 'disable' },
        templateDir: inject('templateDir'),
      });
      const password = 'traced-fsync-password';
      await g.createDatabase('traced', password);
      traceFile = path.join(g.root, 'strace.txt');
      tracer = spawn(
        'strace',
        [
          '-f',
          '-y',
          '-s',
          '200',
          '-e',
          'trace=fdatasync,fsync,write,writev,sendto,sendmsg',
          '-o',
          traceFile,
          '-p',
          String(g.pid),
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      await new Promise<void>((resolve, reject) => {
        tracer?.stderr?.on('data', (d: Buffer) => {
          if (/attached/.test(d.toString())) resolve();
        });
        tracer?.once('exit', (code) => reject(new Error(`strace exited (${code})`)));
      });
      const c = new pg.Client({
        host: '127.0.0.1',
        port: g.port,
        user: 'postgres',
        password,
        database: 'traced',
        ssl: false,
      });
      await c.connect();
      await c.query('create table ledger (n int)');
      for (let i = 0; i < COMMITS; i++) await c.query('insert into ledger values ($1)', [i]);
      await c.end();
      const exited = new Promise((r) => tracer?.once('exit', r));
      tracer.kill('SIGINT');
      await exited;
      const { acks, unsynced, walSyncs } = readTrace(await readFile(traceFile, 'utf8'));
      expect(acks).toBe(COMMITS);
      if (mode === 'on') expect(unsynced).toBe(0);
      else expect(walSyncs).toBe(0);
    },
    120_000,
  );
});

const COMMITS = 10;

/** Walks a strace -f log: each reply carrying `INSERT 0 1` needs a WAL fdatasync finished since the one before. */
function readTrace(text: string): { acks: number; unsynced: number; walSyncs: number } {
  const pendingWalSync = new Set<string>();
  let synced = false;
  let acks = 0;
  let unsynced = 0;
  let walSyncs = 0;
  for (const line of text.split('\n')) {
    const pid = line.split(/\s+/)[0] ?? '';
    const sync = /(fdatasync|fsync)\(\d+<([^>]*)>/.exec(line);
    if (sync && /\/pg_wal\//.test(sync[2] ?? '')) {
      if (/<unfinished \.\.\.>$/.test(line)) pendingWalSync.add(pid);
      else if (/= 0$/.test(line)) {
        synced = true;
        walSyncs++;
      }
      continue;
    }
    if (/<\.\.\. f(data)?sync resumed>/.test(line) && pendingWalSync.delete(pid)) {
      synced = true;
      walSyncs++;
      continue;
    }
    if (/^\d+\s+(write|writev|sendto|sendmsg)\(\d+<(socket|TCP)/.test(line) && line.includes('INSERT 0 1')) {
      acks++;
      if (!synced) unsynced++;
      synced = false;
    }
  }
  return { acks, unsynced, walSyncs };
}
