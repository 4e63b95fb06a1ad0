/**
 * A bound on one database's WASM heap. Postgres' memory comes from malloc in WASM linear memory,
 * which grows on demand up to PGlite's 2 GiB and never shrinks: one query
 * (`array_agg` of large values, a huge sort in memory) could otherwise leave its database's
 * worker holding 2 GiB until the database closes, and a few such tenants take the node down.
 *
 * The heap grows through one Emscripten import, `emscripten_resize_heap(requestedBytes)`; when
 * it answers false, malloc returns NULL and Postgres raises its own `53200 out of memory` for that
 * statement, and the database goes on. This wraps the import before the module is instantiated.
 * Emscripten grows by up to a fifth more than requested (at most 96 MiB more), so the heap can end
 * up that much past the limit; a request past the limit is always refused.
 */

type Instantiate = (imports: WasmImports, receive: (...args: unknown[]) => void) => unknown;
interface WasmImports {
  env?: Record<string, unknown>;
}

const RESIZE = 'emscripten_resize_heap';

/** `opts` with its instantiateWasm wrapping the heap's growth; `maxBytes` 0 = unchanged. */
export function withHeapLimit<T extends object>(opts: T, maxBytes: number): T {
  const instantiate = (opts as { instantiateWasm?: Instantiate }).instantiateWasm;
  if (maxBytes <= 0 || !instantiate) return opts;
  return {
    ...opts,
    instantiateWasm: (imports: WasmImports, receive: (...args: unknown[]) => void) => {
      const env = imports.env;
      const resize = env?.[RESIZE];
      if (env && typeof resize === 'function') {
        const limited = (requested: number): boolean => {
          if (requested >>> 0 > maxBytes) return false;
          return resize(requested) as boolean;
        };
        // Dynamic linking reads an import's signature from this property.
        Object.assign(limited, { sig: (resize as { sig?: string }).sig });
        env[RESIZE] = limited;
      }
      return instantiate(imports, receive);
    },
  };
}
