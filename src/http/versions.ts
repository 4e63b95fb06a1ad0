import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { Hono } from 'hono';
import { z } from 'zod';
import { type DatabaseManager, InvalidRequestError, PayloadTooLargeError } from '../admin/service.js';
import { clonedJson, type Info, type RestoredJson, uploadedJson, versionJson } from '../admin/views.js';
import { parseBody } from './body.js';
import type { AdminEnv } from './env.js';

/**
 * The archive routes of the admin API: versions, restore, clone (JSON, under /v1 and its body
 * limit) and upload (a streamed tarball body, registered outside that limit).
 */

export const DEFAULT_MAX_UPLOAD_BYTES = 100 * 1000 * 1000;

/** Compressed bytes can exceed the uncompressed size a little (incompressible data). */
const compressedAllowance = (maxBytes: number) => Math.ceil(maxBytes * 1.01) + 64 * 1024;

/** A point in time: an ISO 8601 timestamp with its zone. */
const PointInTime = z.iso.datetime({ offset: true }).transform((v) => new Date(v));

const RestoreBody = z.strictObject({
  version: z.string().min(1).max(200).optional(),
  at: PointInTime.optional(),
});

const CloneBody = z.strictObject({
  id: z.string(),
  version: z.string().min(1).max(200).optional(),
  at: PointInTime.optional(),
  username: z.string().optional(),
  password: z.string().min(1).max(1024).optional(),
});

export interface ArchiveRoutesDeps {
  manager: DatabaseManager;
  info: Info;
  /** Largest uploaded tarball, uncompressed (MAX_UPLOAD_BYTES). */
  maxUploadBytes: number;
}

function flag(value: string | undefined, name: string): boolean {
  if (value === undefined || value === '0' || value === 'false') return false;
  if (value === '' || value === '1' || value === 'true') return true;
  throw new InvalidRequestError(`${name} takes 1 or 0`);
}

/** GET versions, POST restore, POST clone: on the /v1 app, whose JSON body limit applies. */
export function registerArchiveRoutes(v1: Hono<AdminEnv>, deps: ArchiveRoutesDeps): void {
  const { manager, info } = deps;

  v1.get('/databases/:id/versions', async (c) => {
    const id = c.req.param('id');
    const versions = await manager.versions(id);
    const range = await manager.restorableRange(id);
    return c.json({
      versions: versions.map(versionJson),
      restorable: range
        ? { earliest: range.earliest.toISOString(), latest: range.latest.toISOString() }
        : null,
    });
  });

  v1.post('/databases/:id/restore', async (c) => {
    const id = c.req.param('id');
    const { version, at } = await parseBody(c.req, RestoreBody);
    const restored = await manager.restore(id, version, at);
    const json: RestoredJson = {
      id,
      restoredFrom: version ?? `at ${at?.toISOString()}`,
      version: versionJson(restored),
    };
    return c.json(json);
  });

  v1.post('/databases/:id/clone', async (c) => {
    const source = c.req.param('id');
    const { id, ...opts } = await parseBody(c.req, CloneBody);
    const cloned = await manager.clone(source, id, opts);
    return c.json(clonedJson(cloned, source, info), 201);
  });
}

/**
 * PUT /v1/databases/:id/upload[?create=1][&user=U]: the raw tarball (gzip or plain) as the body,
 * streamed to the manager. Registered on the root app so the JSON body limit does not apply.
 */
export function registerUploadRoute(app: Hono<AdminEnv>, deps: ArchiveRoutesDeps): void {
  const { manager, info, maxUploadBytes } = deps;
  app.put('/v1/databases/:id/upload', async (c) => {
    const id = c.req.param('id');
    const create = flag(c.req.query('create'), 'create');
    const user = c.req.query('user');
    const length = Number(c.req.header('content-length'));
    if (Number.isFinite(length) && length > compressedAllowance(maxUploadBytes)) {
      throw new PayloadTooLargeError(
        `upload rejected: larger than MAX_UPLOAD_BYTES (${maxUploadBytes} bytes)`,
      );
    }
    const raw = c.req.raw.body;
    if (!raw || length === 0) throw new InvalidRequestError('send the tarball as the request body');
    const body = Readable.fromWeb(raw as unknown as NodeReadableStream<Uint8Array>);
    const uploaded = await manager.upload(id, body, {
      create,
      maxBytes: maxUploadBytes,
      ...(user !== undefined ? { username: user } : {}),
    });
    return c.json(uploadedJson(uploaded, info), uploaded.created ? 201 : 200);
  });
}
