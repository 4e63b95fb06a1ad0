import type { Catalog } from './catalog.js';
import { openEmbeddedCatalog } from './embedded.js';

export * from './catalog.js';

export interface OpenCatalogOptions {
  /**
   * postgres:// URL of an external catalog shared by every node (config `CATALOG_URL`).
   * Default: unset, meaning the embedded PGlite catalog at `dir`.
   */
  url?: string | undefined;
  /** PGDATA of the embedded catalog, used when `url` is unset (the app passes `DATA_DIR/_catalog`). */
  dir: string;
  /** Pre-initialised PGlite PGDATA copied to create the embedded catalog. */
  templateDir: string;
  /** External catalog only: see `PostgresCatalogOptions.onError`. */
  onError?: (err: Error) => void;
}

/** Opens and migrates the catalog: external PostgreSQL when `url` is set, embedded PGlite otherwise. */
export async function openCatalog(options: OpenCatalogOptions): Promise<Catalog> {
  if (options.url) {
    // Lazy so a single embedded node never loads the `pg` driver.
    const { openPostgresCatalog } = await import('./postgres.js');
    return openPostgresCatalog(options.url, options.onError ? { onError: options.onError } : {});
  }
  return openEmbeddedCatalog({ dir: options.dir, templateDir: options.templateDir });
}
