import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Hono } from 'hono';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { adminRequest } from '../cli/admin-client.js';
import type { AdminEnv } from './env.js';
import { startAdmin } from './server.js';

/** A stand-in app that reports whether the request was marked trusted. */
const app = new Hono<AdminEnv>().get('/whoami', (c) => c.json({ trusted: c.env?.trusted === true }));
const logger = pino({ level: 'silent' });

let dir = '';
let socketPath = '';
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'admin-srv-'));
  socketPath = path.join(dir, 'admin.sock');
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('startAdmin', () => {
  it('serves TCP untrusted and the Unix socket trusted, mode 0600, removed on close', async () => {
    const server = await startAdmin({ app, host: '127.0.0.1', port: 0, socketPath, logger });
    try {
      expect(server.port).toBeGreaterThan(0);
      const tcp = await fetch(`http://127.0.0.1:${server.port}/whoami`);
      expect(await tcp.json()).toEqual({ trusted: false });
      expect(await adminRequest(socketPath, 'GET', '/whoami')).toEqual({ trusted: true });
      expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
    } finally {
      await server.close();
    }
    expect(await exists(socketPath)).toBe(false);
  });

  it('replaces a stale socket file left by a killed process', async () => {
    // Node unlinks its socket on close, so only a process that dies leaves one behind.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await once(child.stdout, 'data');
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect((await stat(socketPath)).isSocket()).toBe(true);

    const server = await startAdmin({ app, host: '127.0.0.1', port: 0, socketPath, logger });
    expect(await adminRequest(socketPath, 'GET', '/whoami')).toEqual({ trusted: true });
    await server.close();
  });

  it('refuses to replace something that is not a socket, and frees the TCP port', async () => {
    await writeFile(socketPath, 'precious');
    await expect(startAdmin({ app, host: '127.0.0.1', port: 0, socketPath, logger })).rejects.toThrow(
      /not a socket/,
    );
    expect(await exists(socketPath)).toBe(true);
  });

  it('refuses socket paths longer than sun_path', async () => {
    const long = path.join(dir, `${'x'.repeat(120)}.sock`);
    await expect(startAdmin({ app, host: '127.0.0.1', port: 0, socketPath: long, logger })).rejects.toThrow(
      /too long/,
    );
  });
});
