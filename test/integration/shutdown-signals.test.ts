import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';

/**
 * Shutdown as an operator sees it, with the real `serve` in a child process: while a client sits
 * in a transaction the drain says what it waits for, and a second signal ends it at once, after
 * the written database was closed and snapshotted.
 */

let archiveDir: string;
let gw: GatewayProcess | undefined;

beforeAll(async () => {
  archiveDir = await mkdtemp(path.join(tmpdir(), 'gw-signals-archive-'));
});
afterAll(async () => {
  await gw?.close(2000);
  await rm(archiveDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Parsed JSON log lines of the child so far (its last 200). */
function logLines(g: GatewayProcess): { msg?: string; [k: string]: unknown }[] {
  return g
    .tail(200)
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as { msg?: string }];
      } catch {
        return [];
      }
    });
}

async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${gw?.tail(40)}`);
    await sleep(100);
  }
}

describe('shutdown signals', () => {
  it('logs drain progress, and a second SIGINT ends the drain at once after a last snapshot', async () => {
    gw = await startGatewayProcess({
      templateDir: inject('templateDir'),
      env: { DRAIN_TIMEOUT: '120s', ARCHIVE_URL: pathToFileURL(archiveDir).href, SNAPSHOT_INTERVAL: '0' },
    });
    const g = gw;
    const password = 'signals-password';
    await g.createDatabase('sig', password);
    const client = new pg.Client(g.pgConfig('sig', password));
    // The server's ErrorResponse, then "Connection terminated unexpectedly" when the socket closes.
    const clientErrors: (Error & { code?: string })[] = [];
    client.on('error', (err) => clientErrors.push(err));
    await client.connect();
    await client.query('create table t (v int)');
    await client.query('insert into t values (1)');
    await client.query('begin');
    await client.query('insert into t values (2)');

    process.kill(g.pid, 'SIGINT');
    // Told at once what it waits for, then reminded every few seconds with the numbers.
    await waitFor(
      'the shutdown line',
      () => logLines(g).find((l) => l.msg?.startsWith('shutting down')),
      10_000,
    );
    const progress = () => logLines(g).filter((l) => l.msg?.startsWith('draining: waiting for clients'));
    await waitFor('two drain progress lines', () => progress().length >= 2, 15_000);
    expect(progress()[0]).toMatchObject({ clients: 1, openDatabases: 1 });
    expect(progress()[1]?.remainingSeconds).toBeLessThan(120);
    expect(g.alive()).toBe(true);

    const second = Date.now();
    process.kill(g.pid, 'SIGINT');
    await waitFor('the exit', () => !g.alive(), 20_000);
    // Not the 120 s drain: the client was ended, the database closed and snapshotted, then exit 0.
    expect(Date.now() - second).toBeLessThan(15_000);
    expect(g.exitStatus()).toBe('code 0');
    const lines = logLines(g);
    expect(lines.some((l) => l.msg?.startsWith('second signal'))).toBe(true);
    expect(lines.find((l) => l.msg === 'database archived on close')).toMatchObject({ db: 'sig' });
    expect(lines.some((l) => l.msg === 'stopped')).toBe(true);

    await waitFor('the client error', () => clientErrors.length > 0, 5000);
    expect(clientErrors[0]).toMatchObject({
      code: '57P01',
      message: 'terminating connection due to server shutdown',
    });
    await client.end().catch(() => undefined);
  });
});
