import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The dashboard's browser code: one script bundled by esbuild from the project's dashboard/
 * folder (browser TypeScript with DOM types, kept out of the server's tsconfig) the first time
 * the page asks for it (~100 ms; kept for the life of the node). Works from TypeScript (npm start,
 * tests) and from dist/ in the project. esbuild is a development dependency: an install without it
 * (or without dashboard/) answers 503 for the script, saying why, unless `npm run build` bundled it
 * into dist/dashboard/app.js.
 */

let bundled: Promise<string> | undefined;

export class BundleUnavailableError extends Error {}

export function dashboardScript(): Promise<string> {
  bundled ??= bundle().catch((err: unknown) => {
    bundled = undefined; // try again next time (esbuild installed meanwhile)
    throw err;
  });
  return bundled;
}

async function bundle(): Promise<string> {
  // `npm run build` writes the bundle to dist/dashboard/app.js (the Docker image has no esbuild).
  const prebuilt = fileURLToPath(new URL('../../../dashboard/app.js', import.meta.url));
  if (existsSync(prebuilt)) return readFile(prebuilt, 'utf8');
  // src/http/dashboard/ and dist/src/http/dashboard/ both lead up to the project's dashboard/.
  const entry = [
    new URL('../../../dashboard/main.ts', import.meta.url),
    new URL('../../../../dashboard/main.ts', import.meta.url),
  ]
    .map((u) => fileURLToPath(u))
    .find((f) => existsSync(f));
  if (!entry) throw new BundleUnavailableError('the dashboard sources (dashboard/main.ts) are not installed');
  let cli: string;
  try {
    cli = createRequire(import.meta.url).resolve('esbuild/bin/esbuild');
  } catch (err) {
    throw new BundleUnavailableError(`the dashboard needs esbuild to build its script: ${String(err)}`);
  }
  // esbuild's own process, not its JS API: the engine's worker bundling (worker-entry.ts) stops
  // the API's shared service when it is done, which would cut a dashboard build under way.
  const code = await new Promise<string>((resolve, reject) => {
    // bin/esbuild is the native binary once esbuild's install script ran, else a node script.
    const [file, pre] = isScript(cli) ? [process.execPath, [cli]] : [cli, []];
    execFile(
      file,
      [
        ...pre,
        entry,
        '--bundle',
        '--platform=browser',
        '--format=iife',
        '--target=es2022',
        '--minify',
        '--log-level=error',
      ],
      { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`esbuild failed: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
  if (!code) throw new Error('esbuild produced no dashboard bundle');
  return code;
}

function isScript(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(2);
    readSync(fd, head, 0, 2, 0);
    return head.toString('latin1') === '#!';
  } finally {
    closeSync(fd);
  }
}
