import { EmscriptenBuiltinFilesystem } from '@electric-sql/pglite/basefs';
import { withHeapLimit } from './heap-limit.js';

/**
 * PGlite's work before Postgres starts (instantiating the WASM module, unpacking the FS bundle
 * into ~1000 in-memory files) does not depend on which database opens. This filesystem lets a
 * PGlite do all of it ahead of time and wait, parked, at the point where PGlite syncs its data
 * directory (`initialSyncFs`); `mount(dir)` then attaches a PGDATA through Emscripten's NODEFS, as
 * PGlite's own NodeFS would, and the open finishes with only Postgres' own startup left.
 */

type EmscriptenOptions = Parameters<EmscriptenBuiltinFilesystem['init']>[1];
export type PgliteModule = Parameters<NonNullable<EmscriptenOptions['preRun']>[number]>[0];

/** Where PGlite expects PGDATA inside its virtual filesystem. */
const PGDATA = '/pglite/data';

export class DeferredNodeFS extends EmscriptenBuiltinFilesystem {
  private module: PgliteModule | undefined;
  private resolveDir: ((dir: string) => void) | undefined;
  private readonly dir = new Promise<string>((resolve) => {
    this.resolveDir = resolve;
  });
  private onParked: (() => void) | undefined;
  /** Resolves once PGlite waits for its data directory. */
  readonly parked = new Promise<void>((resolve) => {
    this.onParked = resolve;
  });

  constructor(
    private readonly onModule: (mod: PgliteModule) => void = () => undefined,
    /** Largest WASM heap Postgres may grow to (heap-limit.ts); 0 = PGlite's own 2 GiB. */
    private readonly maxHeapBytes = 0,
  ) {
    super();
  }

  override async init(pg: Parameters<EmscriptenBuiltinFilesystem['init']>[0], opts: EmscriptenOptions) {
    this.pg = pg;
    const keep = (mod: PgliteModule) => {
      this.module = mod;
      this.onModule(mod);
    };
    const preRun = [...(opts.preRun ?? []), keep];
    return { emscriptenOpts: withHeapLimit({ ...opts, preRun }, this.maxHeapBytes) };
  }

  override async initialSyncFs(): Promise<void> {
    this.onParked?.();
    const root = await this.dir;
    const mod = this.module;
    if (!mod) throw new Error('PGlite module missing at mount time');
    mod.FS.mkdirTree(PGDATA);
    mod.FS.mount(mod.NODEFS, { root }, PGDATA);
  }

  /** Lets the parked PGlite go on with `dir` as its PGDATA. */
  mount(dir: string): void {
    this.resolveDir?.(dir);
  }

  override async closeFs(): Promise<void> {
    this.module?.FS.quit();
  }
}
