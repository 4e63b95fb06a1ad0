import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { adminRequest } from './admin-request.js';
import { type FaultControlServer, startFaultControl } from './fault-control-server.js';
import { TcpFaultProxy } from './fault-proxy.js';
import { freePort } from './ports.js';
import { createTestDatabase, startPostgres, type TestPostgres } from './postgres.js';
import { startS3, type TestS3 } from './s3.js';

/**
 * The fault-injection harness of cluster mode: N real gateway processes on one machine with a
 * real PostgreSQL 15 catalog and s3rver. Each node reaches the catalog, the archive and its peers
 * through its own TCP fault proxies, so one node can be cut off or slowed down alone. Per node:
 * kill -9, SIGSTOP/SIGCONT, SIGTERM, restart on the same data directory and ports. A loopback
 * control API (fault-control-server.ts) is every node's FAULT_CONTROL_URL, so a node's admin API
 * and dashboard can inject the same faults. Usable from tests and from scripts/cluster-faults.ts.
 */

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MAX_KEPT_LINES = 5000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface ClusterHarnessOptions {
  size: number;
  /** LEASE_TTL for every node (short in tests). Default 2s. */
  leaseTtl?: string;
  /** Extra environment for every node (DURABILITY, IDLE_TIMEOUT...). */
  env?: Record<string, string>;
  templateDir?: string;
  /** Existing catalog server URL (a fresh database is created in it); default a new PostgreSQL 15. */
  catalogServerUrl?: string;
}

export interface NodeFaults {
  /** Between the node and the catalog. */
  catalog: TcpFaultProxy;
  /** Between the node and the archive (S3). */
  archive: TcpFaultProxy;
  /** In front of the node's internal listener: what its peers dial. */
  peers: TcpFaultProxy;
}

export class HarnessNode {
  port = 0;
  adminPort = 0;
  /** The HTTPS front door (SQL over HTTP, WebSocket). */
  httpPort = 0;
  private child: ChildProcess | undefined;
  private exit: string | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly recent: string[] = [];

  constructor(
    readonly id: string,
    readonly root: string,
    readonly clusterPort: number,
    readonly faults: NodeFaults,
    private readonly env: Record<string, string>,
    private readonly ca: () => Buffer,
  ) {}

  /** The CA that signed the nodes' certificate (HTTPS and WebSocket clients trust it). */
  get tlsCa(): Buffer {
    return this.ca();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  alive(): boolean {
    return this.child !== undefined && this.exit === undefined;
  }

  tail(n = 40): string {
    return this.recent.slice(-n).join('\n');
  }

  /** Log lines (parsed) whose msg matches. */
  logged(msg: string): Record<string, unknown>[] {
    return this.recent
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return undefined;
        }
      })
      .filter((e): e is Record<string, unknown> => e !== undefined && e.msg === msg);
  }

  async start(timeoutMs = 120_000): Promise<void> {
    this.exit = undefined;
    let listening: { port: number; adminPort: number; httpPort: number } | undefined;
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', 'serve'], {
      cwd: repo,
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const onLine = (line: string) => {
      this.recent.push(line);
      if (this.recent.length > MAX_KEPT_LINES) this.recent.shift();
      if (!line.includes('"listening"')) return;
      try {
        const entry = JSON.parse(line) as { port?: number; adminPort?: number; httpPort?: number };
        if (entry.port && entry.adminPort)
          listening = { port: entry.port, adminPort: entry.adminPort, httpPort: entry.httpPort ?? 0 };
      } catch {}
    };
    const lines = () => {
      let partial = '';
      return (d: Buffer) => {
        partial += d.toString('utf8');
        for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
          onLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
        if (partial.length > 1_000_000) partial = '';
      };
    };
    child.stdout?.on('data', lines());
    child.stderr?.on('data', lines());
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    this.exited = new Promise<void>((resolve) =>
      child.once('exit', (code, signal) => {
        process.off('exit', killOnExit);
        this.exit = signal ? `signal ${signal}` : `code ${code}`;
        resolve();
      }),
    );
    const deadline = Date.now() + timeoutMs;
    while (!listening) {
      if (this.exit !== undefined || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`node ${this.id} did not start (${this.exit ?? 'timeout'}):\n${this.tail(30)}`);
      }
      await sleep(50);
    }
    this.port = listening.port;
    this.adminPort = listening.adminPort;
    this.httpPort = listening.httpPort;
  }

  /** kill -9: no shutdown, nothing released. */
  async kill9(): Promise<void> {
    if (!this.alive()) return;
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** SIGSTOP: the process freezes (timers, sockets and all), as in a long GC or VM pause. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** SIGTERM (graceful: drain, close, release), SIGKILL after `graceMs`. */
  async stop(graceMs = 20_000): Promise<void> {
    if (!this.alive()) return;
    this.resume();
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Starts the node again on its data directory (after kill9 or stop). */
  async restart(): Promise<void> {
    await this.kill9();
    await this.start();
  }

  pgConfig(db: string, password: string): pg.ClientConfig {
    return {
      host: '127.0.0.1',
      port: this.port,
      user: 'postgres',
      password,
      database: 'postgres',
      ssl: { ca: this.ca(), servername: `${db}.db.example.com` },
      connectionTimeoutMillis: 30_000,
    };
  }

  request(
    method: string,
    pathname: string,
    body?: unknown,
    timeoutMs = 30_000,
  ): Promise<{ status: number; body: string }> {
    return adminRequest(
      this.adminPort,
      method,
      pathname,
      body === undefined ? undefined : JSON.stringify(body),
      timeoutMs,
    );
  }

  async createDatabase(id: string, password: string): Promise<void> {
    const res = await this.request('POST', '/v1/databases', { id, password }, 60_000);
    if (res.status !== 201) throw new Error(`create ${id}: ${res.status} ${res.body}`);
  }
}

export interface ClusterHarness {
  nodes: HarnessNode[];
  catalogUrl: string;
  s3: TestS3;
  /** The control API the nodes' /v1/faults routes call (FAULT_CONTROL_URL). */
  control: FaultControlServer;
  /** The nodes' CLUSTER_SECRET (tests speak to a node's cluster port as a peer would). */
  secret: string;
  /** A node chosen at random among the live ones. */
  anyNode(except?: HarnessNode): HarnessNode;
  /** The live node the catalog names as the database's owner (undefined when none). */
  ownerOf(db: string): Promise<HarnessNode | undefined>;
  /** The placement row (owner, generation). */
  placement(db: string): Promise<{ owner: string | null; generation: bigint } | undefined>;
  /** Writes every node's kept log lines to `dir/<node>.log` (for a failed run). */
  dumpLogs(dir: string): Promise<void>;
  close(): Promise<void>;
}

export async function startClusterHarness(opts: ClusterHarnessOptions): Promise<ClusterHarness> {
  const root = await mkdtemp(path.join(tmpdir(), 'gw-cluster-'));
  const cleanups: (() => Promise<void>)[] = [() => rm(root, { recursive: true, force: true })];
  const close = async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
  };
  try {
    let pgServer: TestPostgres | undefined;
    if (!opts.catalogServerUrl) {
      pgServer = await startPostgres();
      cleanups.push(() => (pgServer as TestPostgres).stop());
    }
    const catalogUrl = await createTestDatabase(opts.catalogServerUrl ?? (pgServer as TestPostgres).url);
    const s3 = await startS3();
    cleanups.push(() => s3.close());
    const catalogTarget = new URL(catalogUrl);
    const s3Target = new URL(s3.directEndpoint);
    const secret = randomBytes(24).toString('hex');
    const nodes: HarnessNode[] = [];
    const control = await startFaultControl(() => nodes);
    cleanups.push(() => control.close());
    const tlsDir = path.join(root, 'tls');
    await mkdir(tlsDir, { recursive: true });
    let ca: Buffer | undefined;
    for (let i = 0; i < opts.size; i++) {
      const id = `node-${i + 1}`;
      const clusterPort = await freePort();
      const faults: NodeFaults = {
        catalog: await new TcpFaultProxy(catalogTarget.hostname, Number(catalogTarget.port)).start(),
        archive: await new TcpFaultProxy(s3Target.hostname, Number(s3Target.port)).start(),
        peers: await new TcpFaultProxy('127.0.0.1', clusterPort).start(),
      };
      cleanups.push(async () => {
        for (const p of Object.values(faults)) await p.close();
      });
      const viaProxy = new URL(catalogUrl);
      viaProxy.port = String(faults.catalog.port);
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? root,
        HOST: '127.0.0.1',
        PORT: '0',
        ADMIN_PORT: '0',
        HTTP_PORT: '0',
        HTTP_HOST: '127.0.0.1',
        DATA_DIR: path.join(root, id),
        TLS_DIR: tlsDir,
        LOG_LEVEL: 'info',
        LOG_PRETTY: 'false',
        SPARE_DATABASES: '1',
        WARM_ENGINES: '1',
        NODE_ID: id,
        CATALOG_URL: viaProxy.href,
        ARCHIVE_URL: `s3://${s3.bucket}/cluster`,
        AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${faults.archive.port}`,
        AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
        AWS_REGION: 'us-east-1',
        CLUSTER_ADDRESS: faults.peers.address,
        CLUSTER_PORT: String(clusterPort),
        CLUSTER_SECRET: secret,
        LEASE_TTL: opts.leaseTtl ?? '2s',
        FAULT_CONTROL_URL: control.url,
        ...(opts.templateDir ? { TEMPLATE_DIR: opts.templateDir } : {}),
        ...opts.env,
      };
      const node = new HarnessNode(id, root, clusterPort, faults, env, () => ca as Buffer);
      nodes.push(node);
      cleanups.push(() => node.kill9());
    }
    // The first node generates the shared development certificate; the others reuse it.
    const [first, ...rest] = nodes as [HarnessNode, ...HarnessNode[]];
    await first.start();
    ca = await readFile(path.join(tlsDir, 'ca.pem'));
    await Promise.all(rest.map((n) => n.start()));
    const { default: pgLib } = await import('pg');
    const placement = async (db: string) => {
      const c = new pgLib.Client({ connectionString: catalogUrl });
      await c.connect();
      try {
        const { rows } = await c.query<{ owner: string | null; generation: string }>(
          'select owner, generation::text from gateway_placements where database_id = $1',
          [db],
        );
        return rows[0] ? { owner: rows[0].owner, generation: BigInt(rows[0].generation) } : undefined;
      } finally {
        await c.end();
      }
    };
    return {
      nodes,
      catalogUrl,
      s3,
      control,
      secret,
      anyNode: (except) => {
        const live = nodes.filter((n) => n.alive() && n !== except);
        return live[Math.floor(Math.random() * live.length)] as HarnessNode;
      },
      placement,
      dumpLogs: async (dir) => {
        await mkdir(dir, { recursive: true });
        for (const n of nodes) await writeFile(path.join(dir, `${n.id}.log`), n.tail(MAX_KEPT_LINES));
      },
      ownerOf: async (db) => {
        const p = await placement(db);
        return nodes.find((n) => n.id === p?.owner);
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
