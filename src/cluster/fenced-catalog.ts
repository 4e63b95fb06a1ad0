import { type Catalog, type Fence, FencedError } from '../catalog/catalog.js';

/**
 * The catalog as the archive's writers (WAL shipping, snapshots) see it in cluster mode: every
 * WAL piece and version they record carries this node's fence for the database, so the catalog
 * refuses it once another node claimed the database (a newer generation). Pruning is refused
 * while this node holds the database but cannot prove its lease. Reads pass through.
 */
export function fencedCatalog(catalog: Catalog, fenceOf: (databaseId: string) => Fence): Catalog {
  const stale = (id: string) => fenceOf(id).generation < -1n;
  const wrapped: Catalog = Object.create(catalog) as Catalog;
  // Refused here without asking the catalog (which may be unreachable: that is often why).
  const refuse = (id: string) => {
    throw new FencedError(`${id}: lease not provable; the write is refused`);
  };
  wrapped.addWal = async (input) => {
    if (stale(input.databaseId)) refuse(input.databaseId);
    return catalog.addWal({ ...input, fence: fenceOf(input.databaseId) });
  };
  wrapped.addVersion = async (input) => {
    if (stale(input.databaseId)) refuse(input.databaseId);
    return catalog.addVersion({ ...input, fence: fenceOf(input.databaseId) });
  };
  wrapped.deleteWalBefore = async (id, time) => {
    if (stale(id)) throw new FencedError(`${id}: lease not provable; WAL pruning refused`);
    return catalog.deleteWalBefore(id, time);
  };
  wrapped.deleteVersion = async (id, version) => {
    if (stale(id)) throw new FencedError(`${id}: lease not provable; version pruning refused`);
    return catalog.deleteVersion(id, version);
  };
  return wrapped;
}
