import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/**
 * Where database workers start. Built code has plain JS next to this file. When the gateway runs
 * as TypeScript (npm start, tests, benchmarks), a worker would have to load tsx first, which
 * costs each worker ~300 ms and ~50 MB; instead the worker's own sources are bundled once with
 * esbuild (packages stay external) into node_modules/.cache, named by content so concurrent
 * processes share it.
 */

let entry: Promise<URL> | undefined;

export function workerUrl(): Promise<URL> {
  entry ??= import.meta.url.endsWith('.ts')
    ? bundleWorker()
    : Promise.resolve(new URL('./engine-worker.js', import.meta.url));
  return entry;
}

async function bundleWorker(): Promise<URL> {
  const { build, stop } = await import('esbuild');
  const result = await build({
    entryPoints: [fileURLToPath(new URL('./engine-worker.ts', import.meta.url))],
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    logLevel: 'silent',
  }).finally(() =>
    // esbuild's service process (~13 MB) would otherwise stay for the life of the node; a later
    // call starts a new one.
    stop(),
  );
  const code = result.outputFiles[0]?.contents;
  if (!code) throw new Error('esbuild produced no worker bundle');
  const hash = createHash('sha256').update(code).digest('hex').slice(0, 16);
  // Inside the project so the bundle's package imports resolve from its node_modules.
  const dir = new URL('../../node_modules/.cache/pglite-gateway/', import.meta.url);
  const file = new URL(`engine-worker-${hash}.mjs`, dir);
  const present = await stat(file).then(
    () => true,
    () => false,
  );
  if (!present) {
    await mkdir(dir, { recursive: true });
    const tmp = new URL(`engine-worker-${hash}.${randomBytes(4).toString('hex')}.tmp`, dir);
    await writeFile(tmp, code);
    await rename(tmp, file);
  }
  return file;
}
