import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { ArchiveStore } from './archive.js';
import { sleep } from './archive.js';
import { describeError } from './version-objects.js';

/**
 * Who may write an archive's embedded catalog: one node at a time, by generations.
 *
 * A node that opens the embedded catalog with an archive claims the next generation by writing
 * `_catalog/claims/<gen>-<ms>-<token>`, then lists the claims: it won only if no other claim of
 * that generation or above is there (whoever sees a rival withdraws and tries again). S3's
 * listings are strongly consistent, so two claimers can never both see themselves alone. This
 * works without conditional writes (`If-None-Match: *`), which s3rver and older MinIO ignore on
 * PUT, and the same way on a file:// archive. The winner writes everything under its own
 * generation (see catalog-archive.ts), so a writer that lost its lease can never overwrite the
 * newer one's objects.
 *
 * The holder renews its lease by writing a heartbeat `_catalog/beats/<claim>/<ms>` every third of
 * CATALOG_LEASE_TTL (deleting the one before), and marks it `released` on a clean shutdown.
 * A node that finds the newest claim held by someone else:
 * - takes over at once when it was released, when this node held it itself (same DATA_DIR, whose
 *   lock says the old process is gone), or with CATALOG_TAKEOVER=true;
 * - otherwise watches its heartbeats for one TTL: a new beat means the holder lives and this node
 *   refuses to start (`CatalogInUseError`); silence means it is dead and this node takes over. A
 *   beat older than two TTLs (by this node's clock) is dead without waiting.
 * A holder that sees a newer claim on renewal has lost the catalog: `onLost` is told, and it
 * stops archiving (its later writes are in no archive; the new holder's state wins).
 */

const CLAIMS = '_catalog/claims/';
const BEATS = '_catalog/beats/';
const CLAIM_NAME = /^(\d{10})-(\d{15})-([0-9a-f]{16})$/;
const BEAT_NAME = /^(\d{15})$/;
const CLAIM_ATTEMPTS = 10;

export interface Claim {
  gen: number;
  /** When it was claimed (the claimer's clock). */
  ms: number;
  /** `<gen>-<ms>-<token>`: names the generation's objects. */
  name: string;
}

/** Another node holds the archive's embedded catalog and renews its lease. */
export class CatalogInUseError extends Error {
  override readonly name = 'CatalogInUseError';
}

export interface CatalogLeaseOptions {
  archive: ArchiveStore;
  nodeId: string;
  /** A lease not renewed for this long is dead (CATALOG_LEASE_TTL). */
  ttlMs: number;
  /** Take over without waiting for the holder's lease to lapse (CATALOG_TAKEOVER). */
  takeover: boolean;
  /** The claim this DATA_DIR held last (its process is gone: we hold the data-directory lock). */
  previous?: string | undefined;
  logger: Logger;
  /** Told once when a newer claim appears: this node no longer owns the catalog. */
  onLost?: (by: Claim) => void;
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

function parseClaim(name: string): Claim | undefined {
  const m = CLAIM_NAME.exec(name);
  return m ? { gen: Number(m[1]), ms: Number(m[2]), name } : undefined;
}

async function listClaims(archive: ArchiveStore): Promise<Claim[]> {
  const claims: Claim[] = [];
  for (const o of await archive.list(CLAIMS)) {
    const claim = parseClaim(o.key.slice(CLAIMS.length));
    if (claim) claims.push(claim);
  }
  return claims.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

async function readSmall(archive: ArchiveStore, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of await archive.get(key)) {
    chunks.push(chunk as Buffer);
    size += (chunk as Buffer).length;
    if (size > 64 * 1024) break;
  }
  return Buffer.concat(chunks).toString('utf8');
}

const body = (text: string) => () => Readable.from([Buffer.from(text)]);

export class CatalogLease {
  private timer: NodeJS.Timeout | undefined;
  private lastBeat: string | undefined;
  private renewing: Promise<void> | undefined;
  private failing = false;
  lost = false;

  private constructor(
    private readonly opts: CatalogLeaseOptions,
    readonly claim: Claim,
  ) {}

  /** Claims the next generation, waiting out or refusing a live holder (see the module comment). */
  static async acquire(opts: CatalogLeaseOptions): Promise<CatalogLease> {
    const { archive } = opts;
    /** A holder watched for a TTL without a sign of life. */
    let dead: string | undefined;
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const claims = await listClaims(archive);
      const holder = claims.at(-1);
      if (holder && holder.name !== opts.previous && holder.name !== dead && !opts.takeover) {
        await waitUntilDead(opts, holder);
        // Look again: someone may have claimed while we watched (then that one is watched).
        dead = holder.name;
        continue;
      }
      const gen = (holder?.gen ?? 0) + 1;
      const claim: Claim = {
        gen,
        ms: Date.now(),
        name: `${pad(gen, 10)}-${pad(Date.now(), 15)}-${randomBytes(8).toString('hex')}`,
      };
      const info = JSON.stringify({ node: opts.nodeId, host: hostname(), pid: process.pid });
      await archive.put(`${CLAIMS}${claim.name}`, body(info));
      const rivals = (await listClaims(archive)).filter((c) => c.gen >= gen && c.name !== claim.name);
      if (rivals.length === 0) {
        const lease = new CatalogLease(opts, claim);
        await lease.renew();
        lease.timer = setInterval(() => void lease.renew(), Math.max(100, Math.floor(opts.ttlMs / 3)));
        lease.timer.unref();
        opts.logger.info(
          { generation: gen, claim: claim.name, archive: archive.describe() },
          'embedded catalog: this node holds the archive lease',
        );
        return lease;
      }
      await archive.delete(`${CLAIMS}${claim.name}`).catch(() => undefined);
      opts.logger.warn(
        { generation: gen },
        'embedded catalog: another node claimed at the same time; retrying',
      );
      await sleep(100 + Math.random() * 500 * (attempt + 1));
    }
    throw new CatalogInUseError(
      `could not claim the embedded catalog of ${archive.describe()}: other nodes keep claiming it`,
    );
  }

  /** Writes a heartbeat and checks that no newer claim appeared. */
  private renew(): Promise<void> {
    this.renewing ??= (async () => {
      try {
        if (this.lost) return;
        const beat = pad(Date.now(), 15);
        await this.opts.archive.put(`${BEATS}${this.claim.name}/${beat}`, body(''));
        if (this.lastBeat) await this.opts.archive.delete(`${BEATS}${this.claim.name}/${this.lastBeat}`);
        this.lastBeat = beat;
        const newer = (await listClaims(this.opts.archive)).find((c) => c.gen > this.claim.gen);
        if (this.failing) this.opts.logger.info('embedded catalog: lease renewed again');
        this.failing = false;
        if (newer) {
          this.lost = true;
          this.stopTimer();
          this.opts.logger.error(
            { claim: this.claim.name, newer: newer.name },
            'embedded catalog: another node took over the archive lease; this node stops archiving its catalog',
          );
          this.opts.onLost?.(newer);
        }
      } catch (err) {
        if (!this.failing)
          this.opts.logger.warn(
            { err: describeError(err) },
            'embedded catalog: could not renew the archive lease; retrying',
          );
        this.failing = true;
      } finally {
        this.renewing = undefined;
      }
    })();
    return this.renewing;
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Clean shutdown: another node may take over at once. */
  async release(): Promise<void> {
    this.stopTimer();
    await this.renewing;
    if (this.lost) return;
    await this.opts.archive
      .put(`${BEATS}${this.claim.name}/released`, body(''))
      .catch((err: unknown) =>
        this.opts.logger.warn({ err: describeError(err) }, 'embedded catalog: could not release the lease'),
      );
  }

  /** Removes the claims (and heartbeats) of generations before this one: nobody needs them. */
  async forgetOlder(): Promise<void> {
    for (const claim of await listClaims(this.opts.archive)) {
      if (claim.gen >= this.claim.gen) continue;
      for (const o of await this.opts.archive.list(`${BEATS}${claim.name}/`))
        await this.opts.archive.delete(o.key);
      await this.opts.archive.delete(`${CLAIMS}${claim.name}`);
    }
  }
}

/** The newest sign of life of a claim: its newest heartbeat, or the claim itself. */
async function lastSignOfLife(
  archive: ArchiveStore,
  claim: Claim,
): Promise<{ ms: number; released: boolean }> {
  let ms = claim.ms;
  let released = false;
  for (const o of await archive.list(`${BEATS}${claim.name}/`)) {
    const name = o.key.slice(`${BEATS}${claim.name}/`.length);
    if (name === 'released') released = true;
    const m = BEAT_NAME.exec(name);
    if (m) ms = Math.max(ms, Number(m[1]));
  }
  return { ms, released };
}

/** Returns once `holder` is known dead; throws `CatalogInUseError` when it renews meanwhile. */
async function waitUntilDead(opts: CatalogLeaseOptions, holder: Claim): Promise<void> {
  const { archive, ttlMs } = opts;
  const first = await lastSignOfLife(archive, holder);
  if (first.released || Date.now() - first.ms > 2 * ttlMs) return;
  opts.logger.warn(
    { claim: holder.name, lastRenewed: new Date(first.ms).toISOString(), waitMs: ttlMs },
    'embedded catalog: the archive lease is held by another node; waiting to see whether it is alive',
  );
  const deadline = Date.now() + ttlMs;
  while (Date.now() < deadline) {
    await sleep(Math.min(1000, Math.max(50, ttlMs / 6)));
    const now = await lastSignOfLife(archive, holder);
    if (now.released) return;
    if (now.ms > first.ms) {
      const who = await readSmall(archive, `${CLAIMS}${holder.name}`).catch(() => '{}');
      let node = 'unknown';
      try {
        const parsed = JSON.parse(who) as { node?: string; host?: string; pid?: number };
        node = `${parsed.node ?? '?'} (host ${parsed.host ?? '?'}, pid ${parsed.pid ?? '?'})`;
      } catch {
        // The claim's body is informative only.
      }
      throw new CatalogInUseError(
        `the embedded catalog of ${archive.describe()} is in use by node ${node}, which renewed its lease at ${new Date(now.ms).toISOString()}: two nodes must never write one archive's catalog. Stop that node or give this one another ARCHIVE_URL (or CATALOG_URL). If that node is really gone, this one takes over by itself once the lease is not renewed for CATALOG_LEASE_TTL, or at once with CATALOG_TAKEOVER=true.`,
      );
    }
  }
}
