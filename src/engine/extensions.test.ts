import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  bundleExtensions,
  type ExtensionPackage,
  PRELOADED_EXTENSIONS,
  packagesOf,
  untar,
} from './extensions.js';

/** A ustar archive of `files` (names under 100 bytes), gzipped. */
function tarball(files: Record<string, string>): Uint8Array {
  const blocks: Buffer[] = [];
  for (const [name, text] of Object.entries(files)) {
    const body = Buffer.from(text);
    const header = Buffer.alloc(512);
    header.write(name, 0);
    header.write(`${body.length.toString(8).padStart(11, '0')}\0`, 124);
    header.write('0', 156);
    header.write('ustar\0', 257);
    blocks.push(header, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  return gzipSync(Buffer.concat([...blocks, Buffer.alloc(1024)]));
}

const text = (b: Uint8Array | undefined) => Buffer.from(b ?? []).toString();

describe('extension tarballs', () => {
  // Like PGlite's spi.tar.gz: several extensions in one tarball, each with a library of its own.
  const spi = untar(
    tarball({
      'share/postgresql/extension/autoinc.control': "module_pathname = '$libdir/autoinc'\n",
      'share/postgresql/extension/autoinc--1.0.sql': 'create function autoinc()',
      'share/postgresql/extension/moddatetime.control':
        "comment = 'x'\nmodule_pathname = '$libdir/moddatetime'\n",
      'share/postgresql/extension/moddatetime--1.0.sql': 'create function moddatetime()',
      'share/doc/postgresql/extension/moddatetime.example': 'docs are left out',
      'lib/postgresql/autoinc.so': 'wasm autoinc',
      'lib/postgresql/moddatetime.so': 'wasm moddatetime',
      'lib/postgresql/auto_explain.so': 'a module for LOAD',
      'share/postgresql/tsearch_data/x.rules': 'rules',
    }),
  );

  it('untars regular files with their contents', () => {
    expect(spi.size).toBe(9);
    expect(text(spi.get('lib/postgresql/autoinc.so'))).toBe('wasm autoinc');
  });

  it('splits a tarball into extensions (control, scripts, library) and modules', () => {
    const found = new Map(packagesOf(spi).map((p) => [p.name, p]));
    expect([...found.keys()].sort()).toEqual(['auto_explain', 'autoinc', 'moddatetime']);
    expect(found.get('auto_explain')?.kind).toBe('module');
    expect([...(found.get('moddatetime')?.files.keys() ?? [])].sort()).toEqual([
      'lib/postgresql/moddatetime.so',
      'share/postgresql/extension/moddatetime--1.0.sql',
      'share/postgresql/extension/moddatetime.control',
      'share/postgresql/tsearch_data/x.rules',
    ]);
  });

  it('refuses paths that leave the install prefix', () => {
    expect(() => untar(tarball({ '../etc/passwd': 'x' }))).toThrow(/unsafe path/);
    expect(() => untar(tarball({ '/etc/passwd': 'x' }))).toThrow(/unsafe path/);
  });
});

describe('bundleExtensions', () => {
  const pkg = (name: string, files: Record<string, string>): [string, ExtensionPackage] => [
    name,
    { name, kind: 'extension', files: new Map(Object.entries(files).map(([p, t]) => [p, Buffer.from(t)])) },
  ];
  const catalog = new Map([
    pkg('vector', { 'lib/postgresql/vector.so': 'vvvv', 'share/postgresql/extension/vector.control': 'c' }),
    pkg('pg_trgm', { 'lib/postgresql/pg_trgm.so': 'tt' }),
    pkg(PRELOADED_EXTENSIONS[0] as string, { 'lib/postgresql/p.so': 'p' }),
  ]);

  it('packs the allowed files into one shared buffer', () => {
    const bundle = bundleExtensions(catalog, ['vector']);
    expect(bundle.names).toEqual(['vector']);
    expect(bundle.buffer.byteLength).toBe(5);
    const so = bundle.files.find((f) => f.path === 'lib/postgresql/vector.so');
    expect(so && text(new Uint8Array(bundle.buffer, so.offset, so.length))).toBe('vvvv');
    expect(bundle.preload).toEqual([]);
  });

  it('all stands for every extension but those that must be preloaded; naming one preloads it', () => {
    expect(bundleExtensions(catalog, ['all']).names).toEqual(['pg_trgm', 'vector']);
    const preloaded = PRELOADED_EXTENSIONS[0] as string;
    const bundle = bundleExtensions(catalog, ['all', preloaded]);
    expect(bundle.names).toContain(preloaded);
    expect(bundle.preload).toEqual([preloaded]);
  });

  it('refuses a name nothing ships', () => {
    expect(() => bundleExtensions(catalog, ['vector', 'postgis'])).toThrow(/unknown extensions: postgis/);
  });
});
