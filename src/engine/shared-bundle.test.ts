import { describe, expect, it } from 'vitest';
import type { PgliteModule } from './deferred-fs.js';
import { bundleSource, copyBundleFilesOnWrite, shareBundle } from './shared-bundle.js';

/** Emscripten's MEMFS write (the in-place branch): what the guard wraps. */
function fakeModule() {
  const write = (stream: { node: { contents: Uint8Array } }, data: Uint8Array, position: number) => {
    stream.node.contents.set(data, position);
    return data.length;
  };
  return { MEMFS: { ops_table: { file: { stream: { write } } } } };
}

describe('shared FS bundle', () => {
  it('is one shared buffer that PGlite accepts as an ArrayBuffer', async () => {
    const shared = shareBundle(new Uint8Array([1, 2, 3]));
    const buffer = await bundleSource(shared).arrayBuffer();
    expect(buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(buffer.constructor.name).toBe('ArrayBuffer');
    expect([...new Uint8Array(buffer)]).toEqual([1, 2, 3]);
  });

  it('copies a bundle file before a write, so other databases keep the original bytes', () => {
    const shared = shareBundle(new Uint8Array([1, 2, 3, 4]));
    const mod = fakeModule();
    copyBundleFilesOnWrite(mod as unknown as PgliteModule);
    const node = { contents: new Uint8Array(shared).subarray(1, 3), usedBytes: 2 };
    mod.MEMFS.ops_table.file.stream.write({ node }, new Uint8Array([9]), 0);
    expect([...node.contents]).toEqual([9, 3]);
    expect(node.contents.buffer).not.toBeInstanceOf(SharedArrayBuffer);
    expect([...new Uint8Array(shared)]).toEqual([1, 2, 3, 4]);

    // A file that already has its own buffer is written in place.
    const own = { contents: new Uint8Array([5, 6]), usedBytes: 2 };
    const before = own.contents;
    mod.MEMFS.ops_table.file.stream.write({ node: own }, new Uint8Array([7]), 1);
    expect(own.contents).toBe(before);
    expect([...own.contents]).toEqual([5, 7]);
  });

  it('fails loudly when the module does not look like Emscripten MEMFS', () => {
    expect(() => copyBundleFilesOnWrite({ MEMFS: {} } as unknown as PgliteModule)).toThrow(/MEMFS/);
  });
});
