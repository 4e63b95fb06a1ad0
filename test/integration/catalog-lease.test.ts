import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { CatalogInUseError, CatalogLease, type Claim } from '../../src/storage/catalog-lease.js';
import { FileArchive } from '../../src/storage/file-archive.js';

/**
 * The embedded catalog's writer lease on a real file:// archive: nodes claiming at the same time
 * end with exactly one holder; a live holder is refused to others, a dead one is taken over after
 * one TTL (at once with takeover), and a holder that was taken over hears of it.
 */

const logger = createLogger({ level: 'silent', pretty: false });
const TTL = 600;
let root: string;
const leases: CatalogLease[] = [];

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'gw-catalog-lease-'));
});

afterAll(async () => {
  for (const l of leases) await l.release().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

function acquire(
  archive: FileArchive,
  node: string,
  extra: { takeover?: boolean; onLost?: (by: Claim) => void } = {},
) {
  return CatalogLease.acquire({
    archive,
    nodeId: node,
    ttlMs: TTL,
    takeover: extra.takeover ?? false,
    logger,
    ...(extra.onLost ? { onLost: extra.onLost } : {}),
  }).then((lease) => {
    leases.push(lease);
    return lease;
  });
}

describe('catalog writer lease', () => {
  it('of nodes claiming at once, exactly one holds the lease and the others are refused', async () => {
    const archive = new FileArchive(path.join(root, 'race'));
    const outcomes = await Promise.allSettled(['a', 'b', 'c', 'd'].map((n) => acquire(archive, n)));
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const o of outcomes.filter((x) => x.status === 'rejected'))
      expect((o as PromiseRejectedResult).reason).toBeInstanceOf(CatalogInUseError);
  }, 60_000);

  it('a dead holder is taken over after one TTL; the taken-over holder hears of it', async () => {
    const archive = new FileArchive(path.join(root, 'dead'));
    let lostTo: Claim | undefined;
    const first = await acquire(archive, 'first', { onLost: (by) => (lostTo = by) });
    // Playing dead: the first holder stops renewing without releasing.
    (first as unknown as { stopTimer(): void }).stopTimer();
    const second = await acquire(archive, 'second');
    expect(second.claim.gen).toBe(first.claim.gen + 1);
    await (first as unknown as { renew(): Promise<void> }).renew();
    expect(first.lost).toBe(true);
    expect(lostTo?.name).toBe(second.claim.name);
  }, 60_000);

  it('takeover claims past a live holder, and a released lease is claimed without a refusal', async () => {
    const archive = new FileArchive(path.join(root, 'takeover'));
    const first = await acquire(archive, 'first');
    const forced = await acquire(archive, 'forced', { takeover: true });
    expect(forced.claim.gen).toBe(first.claim.gen + 1);
    await forced.release();
    const next = await acquire(archive, 'next');
    expect(next.claim.gen).toBe(forced.claim.gen + 1);
  }, 60_000);
});
