import type pg from 'pg';
import postgres from 'postgres';
import { readUntilClose, tlsConnect, untagged } from './raw.js';
import type { TestServer } from './server.js';

/** Driver-level helpers for multiplexing and fault tests. */

/** node-postgres internals the tests reach into: the wire connection and the backend key. */
interface PgInternals {
  connection: {
    stream: { destroy(): void };
    parse(query: { name: string; text: string; types?: unknown[] }): void;
    flush(): void;
    once(event: 'parseComplete', listener: () => void): void;
    on(
      event: 'parameterStatus',
      listener: (m: { parameterName: string; parameterValue: string }) => void,
    ): void;
    on(event: 'readyForQuery' | 'parseComplete', listener: () => void): void;
  };
  processID: number;
  secretKey: number;
}

export const internals = (client: pg.Client | pg.PoolClient) => client as unknown as PgInternals;

/** Drops the client's socket without a Terminate, as a crashed client would. */
export function killSocket(client: pg.Client): void {
  internals(client).connection.stream.destroy();
}

/** A postgres.js pool routed by SNI. */
export function postgresJs(t: TestServer, id: string, password: string, max = 10) {
  return postgres({
    host: '127.0.0.1',
    port: t.port,
    user: 'postgres',
    password,
    database: 'postgres',
    ssl: { ca: t.ca, servername: `${id}.db.example.com` },
    max,
    onnotice: () => undefined,
    connect_timeout: 20,
  });
}

/** Sends a CancelRequest over TLS (as libpq does with sslmode=require) and waits for the close. */
export async function sendCancel(
  t: TestServer,
  id: string,
  processId: number,
  secretKey: number,
): Promise<void> {
  const socket = await tlsConnect(t.port, t.ca, `${id}.db.example.com`);
  const body = Buffer.alloc(8);
  body.writeInt32BE(processId, 0);
  body.writeInt32BE(secretKey, 4);
  socket.write(untagged(80877102, body));
  await readUntilClose(socket, 5000);
}

/** Whether `promise` is still unsettled after `ms`. */
export async function stillPending(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const pending = Symbol('pending');
  const timer = new Promise((resolve) => setTimeout(() => resolve(pending), ms));
  const outcome = await Promise.race([
    promise.then(
      () => 'settled',
      () => 'settled',
    ),
    timer,
  ]);
  return outcome === pending;
}

/** psql conninfo for a database routed by SNI, verifying the dev CA. */
export function psqlConninfo(t: TestServer, id: string): string {
  return `host=${id}.db.example.com hostaddr=127.0.0.1 port=${t.port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${t.caPath}`;
}

/** The SQLSTATE of an error thrown by pg or postgres.js. */
export const codeOf = (err: unknown): string | undefined => (err as { code?: string }).code;
