import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { type ClientRequest, request } from 'node:http';
import type {
  ClonedJson,
  CreatedDatabaseJson,
  DatabaseJson,
  PasswordJson,
  RestoredJson,
  TemplateJson,
  UploadedJson,
  VersionJson,
} from '../admin/views.js';

/**
 * The `db` commands' operations, and their remote implementation: the admin API of the running
 * server over its Unix socket (trusted by file mode, so no token). The local implementation, for
 * when no server runs, is in `local-ops.ts`; both return the admin API's JSON shapes.
 */

export interface DbOps {
  /** Said (on stderr) after printed connection info: what it may get wrong (the offline port). */
  connectionNote?: string;
  create(
    id: string,
    opts: {
      readOnly?: boolean;
      username?: string;
      password?: string;
      template?: string;
      roleMode?: 'owner' | 'writer';
    },
  ): Promise<CreatedDatabaseJson>;
  list(): Promise<DatabaseJson[]>;
  delete(id: string): Promise<void>;
  update(
    id: string,
    patch: { readOnly?: boolean; poolMode?: 'session' | 'transaction' | null; roleMode?: 'owner' | 'writer' },
  ): Promise<DatabaseJson>;
  /** Templates (issue 18). */
  createTemplate(name: string, sql: string): Promise<TemplateJson>;
  listTemplates(): Promise<TemplateJson[]>;
  deleteTemplate(name: string): Promise<void>;
  updateTemplate(name: string, sql: string): Promise<TemplateJson>;
  /** TypeScript types of a template or a database (a module's text). */
  templateTypes(name: string): Promise<string>;
  types(id: string): Promise<string>;
  /** Migrates one database made from a template to its newest version. */
  migrate(id: string): Promise<MigrationResultJson>;
  passwd(id: string, opts: { username?: string; password?: string }): Promise<PasswordJson>;
  versions(id: string): Promise<VersionJson[]>;
  /** The points in time a restore --at can reach; null without versions. */
  restorable(id: string): Promise<{ earliest: string; latest: string } | null>;
  /** A version, or a point in time `at` (ISO 8601). */
  restore(id: string, version: string | undefined, at?: string): Promise<RestoredJson>;
  clone(
    source: string,
    id: string,
    opts: { version?: string; at?: string; username?: string; password?: string },
  ): Promise<ClonedJson>;
  /** Sends the tarball at `file`; `onProgress` hears bytes sent so far and the file's size. */
  upload(
    id: string,
    file: string,
    opts: { create?: boolean; username?: string },
    onProgress?: (sent: number, total: number) => void,
  ): Promise<UploadedJson>;
  /** Cluster mode, on the owner's running server: hands the database to `node` (`db move`). */
  move(id: string, node: string): Promise<{ database: string; owner: string; generation: string }>;
  /** Cluster mode, on a running server: hands all its databases to other nodes (`node drain`). */
  drain(): Promise<{ node: string; databases: { database: string; owner?: string; error?: string }[] }>;
  close(): Promise<void>;
}

export interface MigrationResultJson {
  id: string;
  outcome: 'current' | 'migrated' | 'failed';
  version: number;
  error?: string;
}

/** Called while a request body is sent, with the bytes sent so far. */
export type Progress = (sent: number, total: number) => void;

/** Bounds a reply from the socket; the API's answers are small. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const TIMEOUT_MS = 120_000;
/** Restore, clone and upload move whole databases through the archive: allow them much longer. */
const LONG_TIMEOUT_MS = 60 * 60_000;

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
  timeoutMs = TIMEOUT_MS,
): Promise<T> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return exchange<T>(
    { socketPath, method, path, timeoutMs },
    payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
    (req) => req.end(payload),
  );
}

/**
 * A request whose body is the file at `file`, streamed (never read into memory), with
 * `onProgress` called as it is sent. A server that answers before reading it all (a rejected
 * upload) is heard: its answer wins over the broken pipe that follows.
 */
export async function adminUpload<T>(
  socketPath: string,
  method: string,
  path: string,
  file: string,
  onProgress?: Progress,
): Promise<T> {
  const total = (await stat(file)).size;
  const source = createReadStream(file);
  // Fail before connecting when the file cannot be read.
  await new Promise<void>((resolve, reject) => {
    source.once('open', () => resolve());
    source.once('error', reject);
  });
  let sent = 0;
  return exchange<T>(
    { socketPath, method, path, timeoutMs: LONG_TIMEOUT_MS },
    { 'content-type': 'application/octet-stream', 'content-length': total },
    (req) => {
      source.on('data', (chunk) => {
        sent += chunk.length;
        onProgress?.(sent, total);
      });
      source.on('error', (err) => req.destroy(err));
      req.once('response', () => source.destroy());
      req.once('close', () => source.destroy());
      source.pipe(req);
    },
  );
}

function exchange<T>(
  target: { socketPath: string; method: string; path: string; timeoutMs: number },
  headers: Record<string, string | number>,
  send: (req: ClientRequest) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let answered = false;
    const req = request(
      {
        socketPath: target.socketPath,
        method: target.method,
        path: target.path,
        timeout: target.timeoutMs,
        headers: { accept: 'application/json', ...headers },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) res.destroy(new Error('admin API response too large'));
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
    req.on('timeout', () =>
      req.destroy(new Error(`admin API did not answer within ${target.timeoutMs / 1000}s`)),
    );
    req.on('error', (err) => {
      // Writing the rest of a body the server refused fails (EPIPE); its answer is what counts.
      if (!answered) reject(err);
    });
    send(req);
  });
}

/** Talks to the server that holds the data directory (`holderPid` only improves messages). */
export function remoteOps(socketPath: string, holderPid: number): DbOps {
  const call = <T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> =>
    reach(() => adminRequest<T>(socketPath, method, path, body, timeoutMs));
  const reach = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      const { code, syscall } = err as NodeJS.ErrnoException;
      if (syscall === 'connect' && (code === 'ENOENT' || code === 'ECONNREFUSED')) {
        throw new Error(
          `the data directory is in use by process ${holderPid}, but its admin socket ${socketPath} ` +
            'is not answering (another CLI command running, or a server without the admin API?)',
        );
      }
      throw err;
    }
  };
  const db = (id: string) => `/v1/databases/${encodeURIComponent(id)}`;
  const tpl = (name: string) => `/v1/templates/${encodeURIComponent(name)}`;
  return {
    createTemplate: (name, sql) => call<TemplateJson>('POST', '/v1/templates', { name, sql }),
    listTemplates: async () => (await call<{ templates: TemplateJson[] }>('GET', '/v1/templates')).templates,
    deleteTemplate: async (name) => {
      await call<undefined>('DELETE', tpl(name));
    },
    updateTemplate: (name, sql) => call<TemplateJson>('POST', `${tpl(name)}/versions`, { sql }),
    templateTypes: async (name) =>
      (await call<{ typescript: string }>('GET', `${tpl(name)}/types`)).typescript,
    types: async (id) => (await call<{ typescript: string }>('GET', `${db(id)}/types`)).typescript,
    move: (id, node) => call('POST', '/v1/cluster/move', { database: id, node }, LONG_TIMEOUT_MS),
    drain: () => call('POST', '/v1/cluster/drain', undefined, LONG_TIMEOUT_MS),
    migrate: (id) => call<MigrationResultJson>('POST', `${db(id)}/migrate`, undefined, LONG_TIMEOUT_MS),
    create: (id, opts) => call<CreatedDatabaseJson>('POST', '/v1/databases', { id, ...opts }),
    list: async () => (await call<{ databases: DatabaseJson[] }>('GET', '/v1/databases')).databases,
    delete: async (id) => {
      await call<undefined>('DELETE', db(id));
    },
    passwd: (id, opts) => call<PasswordJson>('POST', `${db(id)}/password`, opts),
    update: (id, patch) => call<DatabaseJson>('PATCH', db(id), patch),
    versions: async (id) => (await call<{ versions: VersionJson[] }>('GET', `${db(id)}/versions`)).versions,
    restorable: async (id) =>
      (await call<{ restorable: { earliest: string; latest: string } | null }>('GET', `${db(id)}/versions`))
        .restorable,
    restore: (id, version, at) =>
      call<RestoredJson>('POST', `${db(id)}/restore`, { version, at }, LONG_TIMEOUT_MS),
    clone: (source, id, opts) =>
      call<ClonedJson>('POST', `${db(source)}/clone`, { id, ...opts }, LONG_TIMEOUT_MS),
    upload: (id, file, opts, onProgress) => {
      const query = new URLSearchParams();
      if (opts.create) query.set('create', '1');
      if (opts.username !== undefined) query.set('user', opts.username);
      const qs = query.size > 0 ? `?${query}` : '';
      return reach(() =>
        adminUpload<UploadedJson>(socketPath, 'PUT', `${db(id)}/upload${qs}`, file, onProgress),
      );
    },
    close: async () => {},
  };
}
