import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { generateDevCertificates } from '../src/gateway/certs.js';
import { type Variant, variantName } from './baseline-rss-report.js';
import {
  cpuSnapshot,
  errorMessage,
  type Log,
  otherCpuCores,
  projectRoot,
  round,
  sleep,
  trackRunning,
} from './tools.js';
import type { BaselineRssRow } from './types.js';

/**
 * Memory at rest: RSS of a whole node (`serve` in a child process: embedded catalog, listeners,
 * admin API, warm database workers) with no database open, as built JavaScript (`npm run build`,
 * `node dist/src/cli/index.js serve`, what the Dockerfile runs) and as TypeScript under tsx, with
 * WARM_ENGINES=0 and the default 2; plus bare `node` as the floor and two steps of a start
 * (modules loaded; embedded catalog opened) to show where the memory goes. RSS is read from
 * /proc/<pid>/status when the server logs "listening" and again after it settled.
 */

const VARIANTS: Variant[] = [
  { runtime: 'node' },
  { runtime: 'dist', stage: 'modules' },
  { runtime: 'dist', stage: 'catalog' },
  { runtime: 'dist', warmEngines: 0 },
  { runtime: 'dist', warmEngines: 2 },
  { runtime: 'tsx', warmEngines: 0 },
  { runtime: 'tsx', warmEngines: 2 },
];

const START_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 20_000;
const GC_WAIT_MS = 1500;
const DIST_CLI = path.join(projectRoot, 'dist', 'src', 'cli', 'index.js');
const MiB = 1024 * 1024;

interface Sample {
  rss: number;
  anon: number;
  /** File-backed and shared memory (the node binary, mapped libraries). */
  file: number;
}

/** VmRSS, RssAnon and RssFile + RssShmem of `pid`, in bytes; undefined when it is gone. */
export function sampleRss(pid: number): Sample | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') + kb('RssShmem') };
}

/** Summed VmRSS of every descendant of `pid` (tsx's and esbuild's helper processes). */
function descendantsRss(pid: number): number {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited meanwhile
    }
  }
  let total = 0;
  const stack = [pid];
  while (stack.length > 0) {
    const parent = stack.pop() as number;
    for (const [child, ppid] of parents) {
      if (ppid !== parent) continue;
      total += sampleRss(child)?.rss ?? 0;
      stack.push(child);
    }
  }
  return total;
}

/** `npm run build` (tsc -p tsconfig.build.json), so dist/ is what src/ says now. */
async function buildDist(): Promise<void> {
  const tsc = path.join(projectRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
    cwd: projectRoot,
    maxBuffer: 16 * MiB,
  }).catch((err: { stdout?: string; message: string }) => {
    throw new Error(`npm run build failed: ${(err.stdout ?? '').trim().slice(0, 2000) || err.message}`);
  });
}

/** Node's arguments; every node gets gc-on-signal.mjs, so SIGUSR2 collects its garbage. */
/**
 * Builds dist/ (quick runs use what is there, as their numbers mean nothing anyway); returns why
 * the dist rows cannot be measured, if they cannot.
 */
async function prepareDist(
  quick: boolean,
  log: Log,
): Promise<{ status: 'failed' | 'not run'; error: string } | undefined> {
  if (quick) {
    if (existsSync(DIST_CLI)) return undefined;
    return { status: 'not run', error: 'dist/ not built (npm run build); --quick does not build it' };
  }
  log('[baseline-rss] npm run build');
  return buildDist().then(
    () => undefined,
    (err: unknown) => ({ status: 'failed' as const, error: errorMessage(err) }),
  );
}

/**
 * The steps of a start, for where the memory goes: the modules `serve` loads (dist/src/server.js
 * and what it imports), then also the embedded catalog opened, as the server opens it.
 */
const STAGE_SCRIPT = `
const dist = ${JSON.stringify(pathToFileURL(path.join(projectRoot, 'dist', 'src', path.sep)).href)};
await import(new URL('server.js', dist));
if (process.env.BENCH_STAGE === 'catalog') {
  const { openCatalog } = await import(new URL('catalog/index.js', dist));
  await openCatalog({ dir: process.env.DATA_DIR + '/_catalog', templateDir: process.env.TEMPLATE_DIR });
}
setInterval(() => {}, 1000);
console.log(JSON.stringify({ msg: 'listening' }));
`;

/** Node's arguments; every node gets gc-on-signal.mjs, so SIGUSR2 collects its garbage. */
function command(variant: Variant): string[] {
  const gc = [
    '--expose-gc',
    '--import',
    pathToFileURL(path.join(projectRoot, 'bench', 'gc-on-signal.mjs')).href,
  ];
  if (variant.stage) return [...gc, '--input-type=module', '-e', STAGE_SCRIPT];
  switch (variant.runtime) {
    case 'node':
      return [...gc, '-e', 'setInterval(() => {}, 1000); console.log(JSON.stringify({ msg: "listening" }))'];
    case 'dist':
      return [...gc, DIST_CLI, 'serve'];
    case 'tsx':
      return [...gc, '--import', 'tsx', path.join(projectRoot, 'src', 'cli', 'index.ts'), 'serve'];
  }
}

interface RunContext {
  root: string;
  tlsDir: string;
  templateDir: string;
  settleSeconds: number;
}

interface Measured {
  startupSeconds: number;
  listening: Sample;
  settled: Sample;
  /** After SIGUSR2 made the node collect its garbage. */
  afterGc: Sample;
  children: number;
}

/** Starts one node, waits for "listening", samples, waits, samples, stops it. */
async function measureOnce(variant: Variant, ctx: RunContext, n: number): Promise<Measured> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? ctx.root,
    NODE_ENV: 'development',
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_PORT: '0',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    DATA_DIR: path.join(ctx.root, `data-${n}`),
    TLS_DIR: ctx.tlsDir,
    TEMPLATE_DIR: ctx.templateDir,
    LOG_LEVEL: 'info',
    LOG_PRETTY: 'false',
    ...(variant.warmEngines !== undefined ? { WARM_ENGINES: String(variant.warmEngines) } : {}),
    ...(variant.stage ? { BENCH_STAGE: variant.stage } : {}),
  };
  const started = performance.now();
  const child = spawn(process.execPath, command(variant), {
    cwd: projectRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid as number;
  let output = '';
  let onListening: (() => void) | undefined;
  const listening = new Promise<void>((resolve) => {
    onListening = resolve;
  });
  child.stdout.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-8000);
    if (/"msg":\s*"listening"/.test(output)) onListening?.();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-8000);
  });
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(`exited with ${signal ?? code}`)),
  );
  // Ctrl-C in run.ts stops the node instead of orphaning it.
  const untrack = trackRunning(async () => {
    child.kill('SIGKILL');
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const outcome = await Promise.race([
      listening.then(() => 'listening'),
      exited,
      new Promise<string>((resolve) => {
        timer = setTimeout(
          () => resolve(`no "listening" within ${START_TIMEOUT_MS / 1000} s`),
          START_TIMEOUT_MS,
        );
      }),
    ]);
    if (outcome !== 'listening') throw new Error(`${outcome}: ${output.trim().slice(-1500)}`);
    const startupSeconds = (performance.now() - started) / 1000;
    const first = sampleRss(pid);
    await sleep(ctx.settleSeconds * 1000);
    const settled = sampleRss(pid);
    const children = descendantsRss(pid);
    child.kill('SIGUSR2');
    await sleep(GC_WAIT_MS);
    const afterGc = sampleRss(pid);
    if (!first || !settled || !afterGc)
      throw new Error(`exited while measured: ${output.trim().slice(-1500)}`);
    return { startupSeconds, listening: first, settled, afterGc, children };
  } finally {
    clearTimeout(timer);
    untrack();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(kill);
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] as number;
}

const mib = (bytes: number) => round(bytes / MiB, 1);

export async function runBaselineRss(ctx: {
  quick: boolean;
  templateDir: string;
  log: Log;
}): Promise<{ rows: BaselineRssRow[]; errors: string[] }> {
  const repeats = ctx.quick ? 1 : 5;
  const settleSeconds = ctx.quick ? 2 : 8;
  const rows: BaselineRssRow[] = [];
  const errors: string[] = [];
  const root = await mkdtemp(path.join(tmpdir(), 'bench-baseline-rss-'));
  try {
    const tlsDir = path.join(root, 'tls');
    await generateDevCertificates({ dir: tlsDir, domain: 'db.example.com' });
    const distProblem = await prepareDist(ctx.quick, ctx.log);
    if (distProblem?.status === 'failed') errors.push(distProblem.error);
    const run: RunContext = { root, tlsDir, templateDir: ctx.templateDir, settleSeconds };
    let n = 0;
    for (const variant of VARIANTS) {
      const base: BaselineRssRow = { ...variant, status: 'ok', repeats, settleSeconds };
      if (variant.runtime === 'dist' && distProblem) {
        rows.push({ ...base, ...distProblem });
        continue;
      }
      const cpu = cpuSnapshot();
      try {
        const samples: Measured[] = [];
        for (let i = 0; i < repeats; i++) samples.push(await measureOnce(variant, run, n++));
        const pick = (f: (m: Measured) => number) => median(samples.map(f));
        const row: BaselineRssRow = {
          ...base,
          startupSeconds: round(
            pick((m) => m.startupSeconds),
            2,
          ),
          listeningMiB: mib(pick((m) => m.listening.rss)),
          settledMiB: mib(pick((m) => m.settled.rss)),
          settledMinMiB: mib(Math.min(...samples.map((m) => m.settled.rss))),
          settledMaxMiB: mib(Math.max(...samples.map((m) => m.settled.rss))),
          afterGcMiB: mib(pick((m) => m.afterGc.rss)),
          anonMiB: mib(pick((m) => m.settled.anon)),
          fileMiB: mib(pick((m) => m.settled.file)),
          childrenMiB: mib(pick((m) => m.children)),
          otherCpuCores: otherCpuCores(cpu, cpuSnapshot()),
        };
        ctx.log(`[baseline-rss] ${variantName(row)}: ${row.settledMiB} MiB settled`);
        rows.push(row);
      } catch (err) {
        const error = `baseline-rss ${variantName(base)}: ${errorMessage(err)}`;
        errors.push(error);
        ctx.log(`[baseline-rss] FAILED ${error}`);
        rows.push({ ...base, status: 'failed', error });
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return { rows, errors };
}
