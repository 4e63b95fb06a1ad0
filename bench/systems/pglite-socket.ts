import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { createFromTemplate } from '../../src/pgdata/template.js';
import { errorMessage, withTimeout } from '../tools.js';
import { benchTemplate } from './gateway.js';
import type { SystemUnderTest, Target } from './types.js';

/**
 * The official PGlite server, @electric-sql/pglite-socket, in this process: one
 * `PGLiteSocketServer` per database (it serves exactly one PGlite), plaintext, no authentication,
 * its multiplexer allowing 100 connections. Each database starts as a copy of the same PGlite
 * template the gateway uses, so both run on identical data directories.
 */

interface Served {
  db: PGlite;
  server: PGLiteSocketServer;
}

const STOP_TIMEOUT_MS = 10_000;

async function serve(dataDir: string): Promise<Served & { port: number }> {
  const db = new PGlite({ dataDir });
  await db.waitReady;
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 100 });
  await server.start();
  const port = Number(server.getServerConn().split(':').pop());
  return { db, server, port };
}

/** Stops one server and its PGlite; a server wedged by a failed run is abandoned after a timeout. */
async function shutdown(served: Served): Promise<void> {
  await withTimeout(served.server.stop(), STOP_TIMEOUT_MS, 'pglite-socket server did not stop').catch(
    () => undefined,
  );
  await withTimeout(served.db.close(), STOP_TIMEOUT_MS, 'PGlite did not close').catch(() => undefined);
}

function targetFor(name: string, port: number): Target {
  return {
    name,
    conninfo: `host=127.0.0.1 port=${port} user=postgres dbname=postgres sslmode=disable`,
    env: {},
    pgConfig: {
      host: '127.0.0.1',
      port,
      user: 'postgres',
      database: 'postgres',
      ssl: false,
      connectionTimeoutMillis: 30_000,
    },
  };
}

export async function startPgliteSocket(opts: { templateDir?: string } = {}): Promise<SystemUnderTest> {
  const root = await mkdtemp(path.join(tmpdir(), 'bench-pglite-socket-'));
  const templateDir = await benchTemplate(opts.templateDir);
  const served = new Map<string, Served>();
  let stopping: Promise<void> | undefined;
  return {
    kind: 'pglite-socket',
    description:
      '@electric-sql/pglite-socket PGLiteSocketServer (maxConnections 100), in-process: plaintext, no authentication',
    async createDatabase(name: string): Promise<Target> {
      const dir = path.join(root, name);
      await createFromTemplate(templateDir, dir);
      const s = await serve(dir);
      served.set(name, s);
      return targetFor(name, s.port);
    },
    async recover(target: Target): Promise<void> {
      const old = served.get(target.name);
      if (old) await shutdown(old);
      try {
        const s = await serve(path.join(root, target.name));
        served.set(target.name, s);
        const fresh = targetFor(target.name, s.port);
        target.conninfo = fresh.conninfo;
        target.pgConfig = fresh.pgConfig;
      } catch (err) {
        throw new Error(`pglite-socket did not restart after a failed run: ${errorMessage(err)}`);
      }
    },
    stop() {
      stopping ??= (async () => {
        for (const s of served.values()) await shutdown(s);
        served.clear();
        await rm(root, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}
