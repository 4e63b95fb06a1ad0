import { randomInt } from 'node:crypto';
import { connect as connectH2, constants as h2 } from 'node:http2';
import { Agent, request } from 'node:https';
import { Client as NeonClient, neonConfig } from '@neondatabase/serverless';
import pg from 'pg';
import { WebSocket } from 'ws';
import { passwordChecks } from '../src/gateway/password-check.js';
import type { Target } from './systems/types.js';

/**
 * The three ways a client reaches one gateway database in the HTTP benchmark, each behind the
 * same tiny interface (open N sessions, run one transaction on a session, close): node-postgres
 * over the TLS Postgres listener, `POST /sql` over HTTPS keep-alive (HTTP/1.1, one connection per
 * client; HTTP/2, every client a stream of one connection; and HTTP/1.1 with the password-check
 * cache emptied before each request, i.e. the key derivation every request paid before it), and
 * the Neon driver's `Client` over wss (with its write coalescing on, the default, and off). One "transaction" is `select 1` or a TPC-B-like transaction.
 */

export const TRANSPORTS = [
  'tcp',
  'http',
  'http-uncached',
  'http2',
  'websocket',
  'websocket-uncoalesced',
] as const;
export type Transport = (typeof TRANSPORTS)[number];
export const HTTP_WORKLOADS = ['select 1', 'tpcb'] as const;
export type HttpWorkload = (typeof HTTP_WORKLOADS)[number];

/** Where the front door listens and how to log in (the gateway's `Target` plus its HTTP port). */
export interface HttpTarget {
  target: Target;
  httpPort: number;
  ca: Buffer;
  password: string;
}

export interface Session {
  run(workload: HttpWorkload): Promise<void>;
  close(): Promise<void>;
}

/** pgbench's TPC-B (sort of) at scale 1, with its random draws. */
function tpcbParams() {
  return {
    aid: randomInt(1, 100_001),
    tid: randomInt(1, 11),
    bid: 1,
    delta: randomInt(-5000, 5001),
  };
}

const TPCB = [
  'update pgbench_accounts set abalance = abalance + $1 where aid = $2',
  'select abalance from pgbench_accounts where aid = $1',
  'update pgbench_tellers set tbalance = tbalance + $1 where tid = $2',
  'update pgbench_branches set bbalance = bbalance + $1 where bid = $2',
  'insert into pgbench_history (tid, bid, aid, delta, mtime) values ($1, $2, $3, $4, current_timestamp)',
] as const;

function tpcbStatements(): { query: string; params: number[] }[] {
  const { aid, tid, bid, delta } = tpcbParams();
  return [
    { query: TPCB[0], params: [delta, aid] },
    { query: TPCB[1], params: [aid] },
    { query: TPCB[2], params: [delta, tid] },
    { query: TPCB[3], params: [delta, bid] },
    { query: TPCB[4], params: [tid, bid, aid, delta] },
  ];
}

/** Creates pgbench's four tables at scale 1 (100,000 accounts) through node-postgres. */
export async function createTpcbTables(target: Target): Promise<void> {
  const client = new pg.Client(target.pgConfig);
  await client.connect();
  try {
    await client.query(`
      drop table if exists pgbench_history, pgbench_tellers, pgbench_accounts, pgbench_branches;
      create table pgbench_branches (bid int primary key, bbalance int, filler char(88));
      create table pgbench_tellers (tid int primary key, bid int, tbalance int, filler char(84));
      create table pgbench_accounts (aid int primary key, bid int, abalance int, filler char(84));
      create table pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
      insert into pgbench_branches select 1, 0, '';
      insert into pgbench_tellers select t, 1, 0, '' from generate_series(1, 10) t;
      insert into pgbench_accounts select a, 1, 0, '' from generate_series(1, 100000) a;`);
    await client.query('vacuum analyze');
  } finally {
    await client.end();
  }
}

/** A client-side transaction the way pgbench sends it: BEGIN, five statements, END. */
async function tpcbOverSession(query: (text: string, params?: number[]) => Promise<unknown>) {
  await query('begin');
  for (const s of tpcbStatements()) await query(s.query, s.params);
  await query('end');
}

async function tcpSession(t: HttpTarget): Promise<Session> {
  const client = new pg.Client(t.target.pgConfig);
  await client.connect();
  return {
    run: async (workload) => {
      if (workload === 'select 1') await client.query('select 1');
      else await tpcbOverSession((text, params) => client.query(text, params));
    },
    close: () => client.end(),
  };
}

async function webSocketSession(t: HttpTarget): Promise<Session> {
  const client = new NeonClient({ connectionString: connectionString(t) });
  await client.connect();
  return {
    run: async (workload) => {
      if (workload === 'select 1') await client.query('select 1');
      else await tpcbOverSession((text, params) => client.query(text, params));
    },
    close: () => client.end(),
  };
}

function connectionString(t: HttpTarget): string {
  return `postgres://postgres:${encodeURIComponent(t.password)}@${t.target.name}.db.example.com/postgres`;
}

/**
 * `POST /sql` over one keep-alive agent shared by the sessions (one socket each): a `select 1`
 * is one query, TPC-B one batch (the server wraps it in BEGIN ... COMMIT).
 */
function httpSessions(
  t: HttpTarget,
  count: number,
  uncached: boolean,
): { sessions: Session[]; agent: Agent } {
  const agent = new Agent({ ca: t.ca, keepAlive: true, maxSockets: count });
  const headers = {
    'content-type': 'application/json',
    'neon-connection-string': connectionString(t),
  };
  const post = (body: unknown) =>
    new Promise<void>((resolve, reject) => {
      // The gateway runs in this process: emptying its cache makes every request derive the keys.
      if (uncached) passwordChecks.clear();
      const payload = JSON.stringify(body);
      const req = request(
        { host: 'localhost', port: t.httpPort, path: '/sql', method: 'POST', headers, agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            if (res.statusCode === 200) resolve();
            else reject(new Error(`/sql answered ${res.statusCode}: ${Buffer.concat(chunks).toString()}`));
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  const session: Session = {
    run: (workload) =>
      workload === 'select 1' ? post({ query: 'select 1', params: [] }) : post({ queries: tpcbStatements() }),
    close: async () => {},
  };
  return { sessions: Array.from({ length: count }, () => session), agent };
}

/** `POST /sql` as streams of one HTTP/2 connection, as a browser or `fetch` with h2 would send them. */
async function http2Sessions(t: HttpTarget, count: number) {
  const session = connectH2(`https://localhost:${t.httpPort}`, { ca: t.ca });
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  const post = (body: unknown) =>
    new Promise<void>((resolve, reject) => {
      const stream = session.request({
        [h2.HTTP2_HEADER_METHOD]: 'POST',
        [h2.HTTP2_HEADER_PATH]: '/sql',
        'content-type': 'application/json',
        'neon-connection-string': connectionString(t),
      });
      let status = 0;
      const chunks: Buffer[] = [];
      stream.once('response', (headers) => {
        status = Number(headers[h2.HTTP2_HEADER_STATUS]);
      });
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.once('error', reject);
      stream.once('end', () => {
        if (status === 200) resolve();
        else reject(new Error(`/sql answered ${status}: ${Buffer.concat(chunks).toString()}`));
      });
      stream.end(JSON.stringify(body));
    });
  const one: Session = {
    run: (workload) =>
      workload === 'select 1' ? post({ query: 'select 1', params: [] }) : post({ queries: tpcbStatements() }),
    close: async () => {},
  };
  return {
    sessions: Array.from({ length: count }, () => one),
    close: () => new Promise<void>((resolve) => session.close(() => resolve())),
  };
}

/**
 * Points the Neon driver at the front door (wss through `wsProxy`, password pipelined).
 * `coalesceWrites` (the driver's default) gathers a run-loop's writes with a `setTimeout(0)`,
 * which in Node adds about a millisecond to every round trip; off, each write is sent at once.
 */
function useFrontDoor(t: HttpTarget, coalesceWrites: boolean): void {
  neonConfig.coalesceWrites = coalesceWrites;
  const ca = t.ca;
  class Trusting extends WebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols, { ca });
    }
  }
  neonConfig.webSocketConstructor = Trusting as unknown as typeof WebSocket;
  neonConfig.wsProxy = (host, port) => `localhost:${t.httpPort}/v2?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = true;
  neonConfig.pipelineConnect = 'password';
}

/** Opens `count` sessions of one transport; `close` ends them all. */
export async function openSessions(
  transport: Transport,
  t: HttpTarget,
  count: number,
): Promise<{ sessions: Session[]; close: () => Promise<void> }> {
  if (transport === 'http' || transport === 'http-uncached') {
    const { sessions, agent } = httpSessions(t, count, transport === 'http-uncached');
    return { sessions, close: async () => agent.destroy() };
  }
  if (transport === 'http2') return http2Sessions(t, count);
  if (transport === 'websocket' || transport === 'websocket-uncoalesced') {
    useFrontDoor(t, transport === 'websocket');
  }
  const open = transport === 'tcp' ? tcpSession : webSocketSession;
  const sessions = await Promise.all(Array.from({ length: count }, () => open(t)));
  return {
    sessions,
    close: async () => {
      await Promise.allSettled(sessions.map((s) => s.close()));
    },
  };
}
