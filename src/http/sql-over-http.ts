import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { z } from 'zod';
import { type ClusterHooks, LocalAfterAll } from '../cluster/cluster.js';
import { GatewayError } from '../errors.js';
import type { ScramLookup } from '../gateway/auth.js';
import type { AuthThrottle } from '../gateway/auth-throttle.js';
import { checkCleartextLogin } from '../gateway/password-check.js';
import { routeConnection } from '../gateway/routing.js';
import type { Logger } from '../log.js';
import {
  beginStatement,
  MAX_PARAMS,
  type PgErrorJson,
  requestMessages,
  resultJson,
} from '../wire/sql-over-http.js';
import { runRemoteUnit } from './remote-unit.js';
import { ResponseTooLarge, runUnit, type UnitDeps, type UnitOptions, type UnitRun } from './session-unit.js';

/**
 * `POST /sql` as the Neon serverless driver sends it: the connection string in a header, one
 * query or a batch in the body, results as JSON with Postgres text values.
 */

export interface SqlOverHttpDeps extends UnitDeps {
  wildcardDomain: string;
  scram: ScramLookup;
  throttle: AuthThrottle;
  /** Largest JSON response (MAX_HTTP_RESPONSE); beyond it the answer is 507. */
  maxResponseBytes: number;
  /** Largest request body; a longer one is refused with 413 before it is parsed. */
  maxRequestBytes: number;
  /** Cluster mode: a database owned by another node runs its unit there. */
  cluster?: ClusterHooks | undefined;
}

export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'POST, OPTIONS',
  'access-control-allow-headers':
    'Neon-Connection-String, Neon-Raw-Text-Output, Neon-Array-Mode, Neon-Batch-Isolation-Level, ' +
    'Neon-Batch-Read-Only, Neon-Batch-Deferrable, Authorization, Content-Type',
  'access-control-max-age': '86400',
};

/** An HTTP answer that is not a query result: its status and JSON body. */
class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(String(body.message));
  }
}

const badRequest = (message: string, code = '08P01') => new HttpFailure(400, { message, code });

const Param = z
  .union([z.string(), z.number(), z.boolean(), z.null()])
  .transform((v) => (v === null ? null : String(v)));
const Query = z.strictObject({ query: z.string(), params: z.array(Param).max(MAX_PARAMS).optional() });
const Body = z.union([Query, z.strictObject({ queries: z.array(Query).max(10_000) })]);

const IsolationLevel = z.enum(['ReadUncommitted', 'ReadCommitted', 'RepeatableRead', 'Serializable']);

/** A request over HTTP/1.1 or HTTP/2 (node:http2's compatibility API). */
export type SqlRequest = IncomingMessage | Http2ServerRequest;

/** What is used of a response; node:http's and node:http2's compatibility responses both fit. */
export interface SqlResponse {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(): unknown;
  end(body: string): unknown;
  readonly headersSent: boolean;
  /** end() was called: the answer is given (on HTTP/2 `writableFinished` is also true after a reset). */
  readonly writableEnded: boolean;
  /** node:http only; an HTTP/2 response tells through its stream. */
  readonly destroyed?: boolean;
  readonly stream?: { readonly destroyed: boolean };
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

const header = (req: SqlRequest, name: string): string | undefined => {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

const flag = (req: SqlRequest, name: string): boolean | undefined => {
  const v = header(req, name)?.toLowerCase();
  return v === undefined ? undefined : v === 'true';
};

/** Reads the body up to `max` bytes; a declared or actual longer body is refused with 413. */
async function readBody(req: SqlRequest, max: number): Promise<string> {
  const declared = Number(header(req, 'content-length') ?? '0');
  if (declared > max) throw new HttpFailure(413, { message: `request body exceeds ${max} bytes` });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new HttpFailure(413, { message: `request body exceeds ${max} bytes` });
    chunks.push(chunk);
  }
  try {
    // Invalid bytes would otherwise become U+FFFD and be stored as such: refuse them, as Postgres
    // refuses an invalid byte sequence (22021).
    return strictUtf8.decode(Buffer.concat(chunks, size));
  } catch {
    throw badRequest('request body is not valid UTF-8', '22021');
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
/** A lone surrogate (a JSON escape like "\ud800") has no UTF-8 form. */
const LONE_SURROGATE = /\p{Cs}/u;

function parseConnectionString(value: string | undefined) {
  if (!value) throw badRequest('missing Neon-Connection-String header');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw badRequest('Neon-Connection-String is not a valid URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw badRequest('Neon-Connection-String must be a postgres:// URL');
  }
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw badRequest('Neon-Connection-String has an invalid escape');
    }
  };
  const user = decode(url.username);
  if (!user) throw badRequest('Neon-Connection-String names no user', '28000');
  const params: Record<string, string> = { user, database: decode(url.pathname.replace(/^\//, '')) };
  const options = url.searchParams.get('options');
  if (options) params.options = options;
  return { host: url.hostname, user, password: decode(url.password), params };
}

function parseRequest(text: string) {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw badRequest('request body is not valid JSON');
  }
  const parsed = Body.safeParse(raw);
  if (!parsed.success) throw badRequest('request body must be {"query", "params"} or {"queries": [...]}');
  const body = parsed.data;
  const queries = 'queries' in body ? body.queries : [body];
  for (const q of queries) {
    if (q.query.includes('\0')) throw badRequest('query contains a NUL character');
    if (LONE_SURROGATE.test(q.query) || q.params?.some((p) => p !== null && LONE_SURROGATE.test(p)))
      throw badRequest('query or parameter holds an unpaired UTF-16 surrogate (not valid UTF-8)', '22021');
  }
  return {
    batch: 'queries' in body,
    queries: queries.map((q) => ({ query: q.query, params: q.params ?? [] })),
  };
}

function send(res: SqlResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    ...CORS_HEADERS,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(json),
  });
  res.end(json);
}

const gatewayErrorJson = (err: GatewayError): PgErrorJson => ({
  message: err.message,
  code: err.code,
  severity: err.severity,
  ...(err.detail ? { detail: err.detail } : {}),
  ...(err.hint ? { hint: err.hint } : {}),
});

/** Answers one `POST /sql`. Never throws: every failure becomes its HTTP answer. */
export async function handleSql(
  req: SqlRequest,
  res: SqlResponse,
  deps: SqlOverHttpDeps,
  log: Logger,
): Promise<void> {
  let cancel: (() => void) | undefined;
  const onClose = () => {
    // The client left (or reset the HTTP/2 stream) before its answer: stop its statement.
    if (!res.writableEnded) cancel?.();
  };
  res.once('close', onClose);
  try {
    const conn = parseConnectionString(header(req, 'neon-connection-string'));
    const text = await readBody(req, deps.maxRequestBytes);
    const { batch, queries } = parseRequest(text);
    const route = routeConnection({
      serverName: conn.host,
      params: conn.params,
      wildcardDomain: deps.wildcardDomain,
    });
    if (!route.ok) throw route.error;
    const reqLog = log.child({ db: route.id, user: conn.user });
    const level = header(req, 'neon-batch-isolation-level');
    const isolation = level === undefined ? undefined : IsolationLevel.safeParse(level);
    if (isolation && !isolation.success) throw badRequest('invalid Neon-Batch-Isolation-Level');
    const openBefore = deps.registry.openDatabase(route.id);
    const storedKey = await checkCleartextLogin(deps, {
      address: req.socket.remoteAddress ?? '',
      database: route.id,
      user: conn.user,
      password: conn.password,
      log: reqLog,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref()),
    });
    if (storedKey === undefined) {
      throw new HttpFailure(400, {
        message: `password authentication failed for user "${conn.user}"`,
        code: '28P01',
        severity: 'FATAL',
      });
    }
    const begin = batch
      ? beginStatement({
          isolationLevel: isolation?.data,
          readOnly: flag(req, 'neon-batch-read-only'),
          deferrable: flag(req, 'neon-batch-deferrable'),
        })
      : undefined;
    const arrayMode = flag(req, 'neon-array-mode') === true;
    const unit = await startUnit(deps, {
      id: route.id,
      user: conn.user,
      storedKey,
      openBefore,
      messages: requestMessages(queries, begin),
      commit: batch,
      maxResponseBytes: deps.maxResponseBytes,
      arrayMode,
      logger: reqLog,
    });
    cancel = unit.cancel;
    const reply = await unit.reply;
    if (reply.error) return send(res, 400, reply.error);
    if (!batch) return send(res, 200, resultJson(reply.results[0] ?? emptyResult, arrayMode));
    const results = reply.results.slice(1, 1 + queries.length).map((r) => resultJson(r, arrayMode));
    return send(res, 200, { results });
  } catch (err) {
    if (res.headersSent || res.destroyed || res.stream?.destroyed) return;
    if (err instanceof HttpFailure) return send(res, err.status, err.body);
    if (err instanceof GatewayError) return send(res, 400, gatewayErrorJson(err));
    if (err instanceof ResponseTooLarge) {
      return send(res, 507, { message: `response is too large (max ${deps.maxResponseBytes} bytes)` });
    }
    log.error({ err }, 'sql over http failed');
    return send(res, 500, { message: 'internal error' });
  } finally {
    res.off('close', onClose);
  }
}

const emptyResult = { command: null, rowCount: null, fields: [], rows: [] };

/** Runs the unit here, or in cluster mode on the database's owner when that is another node. */
async function startUnit(deps: SqlOverHttpDeps, opts: UnitOptions): Promise<UnitRun> {
  const cluster = deps.cluster;
  if (!cluster) return runUnit(deps, opts);
  const local = () => runUnit({ ...deps, mayAcknowledge: (id) => cluster.mayAcknowledge(id) }, opts);
  const target = await cluster.route(opts.id);
  if (target.kind !== 'forward') return local();
  const forwarded = runRemoteUnit({
    ...opts,
    dial: () =>
      cluster.dialOwner(
        target,
        { db: opts.id, user: opts.user, params: {}, storedKey: opts.storedKey },
        opts.logger,
      ),
    cancelKey: (processId, secretKey) => cluster.cancelElsewhere(processId, secretKey),
  });
  // The owner may have gone while routing: this node then serves the database itself.
  let cancel = forwarded.cancel;
  return {
    cancel: () => cancel(),
    reply: forwarded.reply.catch((err: unknown) => {
      if (!(err instanceof LocalAfterAll)) throw err;
      const here = local();
      cancel = here.cancel;
      return here.reply;
    }),
  };
}
