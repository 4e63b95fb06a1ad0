import { request } from 'node:http';
import type { CreatedDatabaseJson, DatabaseJson, PasswordJson } from '../http/app.js';

/**
 * The `db` commands' operations, and their remote implementation: the admin API of the running
 * server over its Unix socket (trusted by file mode, so no token). The local implementation, for
 * when no server runs, is in `local-ops.ts`; both return the admin API's JSON shapes.
 */

export interface DbOps {
  create(
    id: string,
    opts: { readOnly?: boolean; username?: string; password?: string },
  ): Promise<CreatedDatabaseJson>;
  list(): Promise<DatabaseJson[]>;
  delete(id: string): Promise<void>;
  update(
    id: string,
    patch: { readOnly?: boolean; poolMode?: 'session' | 'transaction' | null },
  ): Promise<DatabaseJson>;
  passwd(id: string, opts: { username?: string; password?: string }): Promise<PasswordJson>;
  close(): Promise<void>;
}

/** Bounds a reply from the socket; the API's answers are small. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const TIMEOUT_MS = 120_000;

export class AdminRequestError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** One JSON request over the Unix socket; non-2xx answers throw with the API's `error` message. */
export function adminRequest<T>(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise<T>((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        timeout: TIMEOUT_MS,
        headers: {
          accept: 'application/json',
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error('admin API response too large'));
          else chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text === '' ? undefined : JSON.parse(text);
          } catch {
            reject(new AdminRequestError(`admin API answered ${status} with a non-JSON body`, status));
            return;
          }
          if (status >= 200 && status < 300) {
            resolve(json as T);
            return;
          }
          const message = (json as { error?: unknown } | undefined)?.error;
          reject(
            new AdminRequestError(
              typeof message === 'string' ? message : `admin API answered ${status}`,
              status,
            ),
          );
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`admin API did not answer within ${TIMEOUT_MS / 1000}s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Talks to the server that holds the data directory (`holderPid` only improves messages). */
export function remoteOps(socketPath: string, holderPid: number): DbOps {
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    try {
      return await adminRequest<T>(socketPath, method, path, body);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        throw new Error(
          `the data directory is in use by process ${holderPid}, but its admin socket ${socketPath} ` +
            'is not answering (another CLI command running, or a server without the admin API?)',
        );
      }
      throw err;
    }
  };
  const db = (id: string) => `/v1/databases/${encodeURIComponent(id)}`;
  return {
    create: (id, opts) => call<CreatedDatabaseJson>('POST', '/v1/databases', { id, ...opts }),
    list: async () => (await call<{ databases: DatabaseJson[] }>('GET', '/v1/databases')).databases,
    delete: async (id) => {
      await call<undefined>('DELETE', db(id));
    },
    passwd: (id, opts) => call<PasswordJson>('POST', `${db(id)}/password`, opts),
    update: (id, patch) => call<DatabaseJson>('PATCH', db(id), patch),
    close: async () => {},
  };
}
