import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * The internal listener's handshake. A peer opens a TCP connection to CLUSTER_PORT and sends one
 * length-prefixed JSON frame: a session hello (the entry node already terminated TLS and ran
 * SCRAM; the owner trusts its word on who the client is) or a cancel hello. The frame carries an
 * HMAC-SHA256 under CLUSTER_SECRET over its other fields, a timestamp and a nonce: a frame from
 * anyone without the secret, an old frame (more than `maxSkewMs` away) or a replayed one is
 * refused. The owner answers with one frame (`HelloReply`); after an accepted session hello the
 * connection carries the client's Postgres protocol bytes as they are, both ways.
 */

export type Hello =
  | {
      kind: 'session';
      /** Entry node's NODE_ID (logs). */
      from: string;
      db: string;
      user: string;
      /** The client's startup parameters (settings, application_name...). */
      params: Record<string, string>;
      /**
       * The verifier the entry node checked the password against. The owner checks it is still
       * the database's once the database is open: one deleted and created again meanwhile (a
       * new salt) is not this client's.
       */
      storedKey?: string | undefined;
    }
  | { kind: 'cancel'; from: string; processId: number; secretKey: number; relayed: boolean }
  /** `db move`: the former owner released the database; the target claims it now. */
  | { kind: 'claim'; from: string; db: string; generation: string }
  /** "Are you there?": an entry node checks that the owner of its relayed sessions still answers. */
  | { kind: 'ping'; from: string };

/**
 * What a hello must look like once its MAC checked out: a peer with the secret but another
 * version (or a bug) must get a refusal, not reach code that trusts the shape.
 */
const HelloSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('session'),
    from: z.string(),
    db: z.string(),
    user: z.string(),
    params: z.record(z.string(), z.string()),
    storedKey: z.string().optional(),
  }),
  z.object({
    kind: z.literal('cancel'),
    from: z.string(),
    processId: z.number().int(),
    secretKey: z.number().int(),
    relayed: z.boolean(),
  }),
  z.object({
    kind: z.literal('claim'),
    from: z.string(),
    db: z.string(),
    generation: z.string().regex(/^\d{1,19}$/),
  }),
  z.object({ kind: z.literal('ping'), from: z.string() }),
]) satisfies z.ZodType<Hello>;

export type HelloReply = { ok: true } | { ok: false; code: string; message: string; retry: boolean };

/** Largest frame accepted (startup parameters are bounded far below it). */
export const MAX_FRAME = 64 * 1024;
const MAX_SKEW_MS = 30_000;

interface Sealed {
  body: Hello;
  ts: number;
  nonce: string;
  mac: string;
}

const macOf = (secret: string, body: Hello, ts: number, nonce: string) =>
  createHmac('sha256', secret)
    .update(JSON.stringify([body, ts, nonce]))
    .digest('hex');

export function frame(value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length);
  return Buffer.concat([head, json]);
}

export function sealHello(secret: string, body: Hello, now = Date.now()): Buffer {
  const nonce = randomBytes(16).toString('hex');
  return frame({ body, ts: now, nonce, mac: macOf(secret, body, now, nonce) } satisfies Sealed);
}

export class HelloError extends Error {}

/** Refuses replays: nonces seen within the accepted time window. Bounded by that window. */
export class NonceWindow {
  private readonly seen = new Map<string, number>();
  constructor(private readonly windowMs = MAX_SKEW_MS * 2) {}
  /** False when the nonce was seen already. */
  admit(nonce: string, now = Date.now()): boolean {
    for (const [n, at] of this.seen) {
      if (now - at <= this.windowMs) break;
      this.seen.delete(n);
    }
    if (this.seen.has(nonce)) return false;
    this.seen.set(nonce, now);
    return true;
  }
}

/** Checks a received hello frame's JSON; throws HelloError when it is not a genuine fresh one. */
export function openHello(secret: string, json: Buffer, nonces: NonceWindow, now = Date.now()): Hello {
  let sealed: Sealed;
  try {
    sealed = JSON.parse(json.toString('utf8')) as Sealed;
  } catch {
    throw new HelloError('hello is not JSON');
  }
  if (typeof sealed !== 'object' || sealed === null || typeof sealed.mac !== 'string')
    throw new HelloError('hello has no mac');
  const expected = Buffer.from(macOf(secret, sealed.body, sealed.ts, sealed.nonce), 'hex');
  const given = Buffer.from(sealed.mac, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    throw new HelloError('hello mac does not match (wrong CLUSTER_SECRET?)');
  if (typeof sealed.ts !== 'number' || Math.abs(now - sealed.ts) > MAX_SKEW_MS)
    throw new HelloError('hello is too old (or the clocks disagree by more than 30 s)');
  if (!nonces.admit(sealed.nonce, now)) throw new HelloError('hello replayed');
  const body = HelloSchema.safeParse(sealed.body);
  if (!body.success)
    throw new HelloError(`hello is malformed (${body.error.issues[0]?.message ?? 'invalid'})`);
  return body.data;
}

/** Splits one length-prefixed frame off `buffer`: the frame and the rest, or undefined if incomplete. */
export function takeFrame(buffer: Buffer): { frame: Buffer; rest: Buffer } | undefined {
  if (buffer.length < 4) return undefined;
  const length = buffer.readUInt32BE(0);
  if (length > MAX_FRAME) throw new HelloError(`frame of ${length} bytes is too large`);
  if (buffer.length < 4 + length) return undefined;
  return { frame: buffer.subarray(4, 4 + length), rest: buffer.subarray(4 + length) };
}
