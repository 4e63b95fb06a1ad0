import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pgliteVersion } from '../src/pgdata/template.js';
import { missingPostgresBinaries, postgresBinDir } from '../test/helpers/postgres.js';

/** Small shared pieces: tool discovery, machine description, statistics, timing helpers. */

/** The repository root (bench/..). */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const INSTALL_HINT = 'apt-get install -y postgresql-15';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects with `message` when `promise` takes longer than `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The executable `name` from PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface Tools {
  /** pgbench from PATH. */
  pgbench: string | undefined;
  /** Directory with initdb + postgres (PG_BIN_DIR or the Debian PostgreSQL 15 location). */
  postgresBinDir: string | undefined;
  /** Why something is missing, with the command that fixes it. */
  problems: string[];
}

export function findTools(): Tools {
  const problems: string[] = [];
  const pgbench = which('pgbench');
  if (!pgbench) {
    problems.push(
      `pgbench not found on PATH: pgbench rows, isolation and scale are not run. Fix: ${INSTALL_HINT}`,
    );
  }
  const dir = postgresBinDir();
  const missing = missingPostgresBinaries(dir);
  if (missing.length > 0) {
    problems.push(
      `PostgreSQL server binaries (${missing.join(', ')}) not found in ${dir}: the postgres reference is not run. ` +
        `Fix: ${INSTALL_HINT} (or set PG_BIN_DIR)`,
    );
  }
  return { pgbench, postgresBinDir: missing.length === 0 ? dir : undefined, problems };
}

export interface Machine {
  cpuModel: string;
  cores: number;
  totalMemoryGiB: number;
  os: string;
  node: string;
  pglite: string;
  pgliteSocket: string;
  pgbench: string;
  postgres: string;
  /** The commit measured, with "+ uncommitted changes" when the tree was dirty. */
  gitRevision: string;
  /** 1-minute load average when the run started: other work on the machine skews everything. */
  loadAverageAtStart: number;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim()
      .split('\n')[0] as string;
  } catch {
    return 'not installed';
  }
}

function packageVersion(name: string): string {
  try {
    const require = createRequire(import.meta.url);
    const entry = require.resolve(name);
    let dir = path.dirname(entry);
    while (dir !== path.dirname(dir)) {
      const file = path.join(dir, 'package.json');
      if (existsSync(file)) {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === name && pkg.version) return pkg.version;
      }
      dir = path.dirname(dir);
    }
  } catch {
    // not installed
  }
  return 'not installed';
}

function gitRevision(): string {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: projectRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'package.json'], {
      cwd: projectRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return dirty ? `${rev} + uncommitted changes in src/` : rev;
  } catch {
    return 'unknown';
  }
}

export function describeMachine(tools: Tools): Machine {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    totalMemoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    pglite: pgliteVersion(),
    pgliteSocket: packageVersion('@electric-sql/pglite-socket'),
    pgbench: tools.pgbench ? firstLine(tools.pgbench, ['--version']) : 'pgbench not installed',
    postgres: tools.postgresBinDir
      ? firstLine(path.join(tools.postgresBinDir, 'postgres'), ['--version'])
      : 'postgres not installed',
    gitRevision: gitRevision(),
    loadAverageAtStart: round(os.loadavg()[0], 2) ?? 0,
  };
}

/** Nearest-rank percentile (p in 0..100) of unsorted values; undefined for none. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function mean(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  return values.reduce((a, b) => a + b, 0) / values.length;
}

export function round(value: number | undefined, digits = 2): number | undefined {
  if (value === undefined || !Number.isFinite(value)) return undefined;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export type Log = (message: string) => void;

/**
 * CPU used on this machine by processes outside the benchmark (everything but this process and
 * its descendants: pgbench, postgres and its backends), so a reader can tell which numbers another
 * workload disturbed. Linux only (/proc); undefined elsewhere.
 */
export interface CpuSnapshot {
  wallMs: number;
  /** Busy jiffies of the whole machine (/proc/stat). */
  busy: number;
  /** utime + stime + cutime + cstime of this process tree. */
  ours: number;
}

const CLOCK_TICKS = 100;

function procStat(pid: string): { ppid: number; cpu: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces.
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const n = (i: number) => Number(f[i]);
    return { ppid: n(1), cpu: n(11) + n(12) + n(13) + n(14) };
  } catch {
    return undefined;
  }
}

export function cpuSnapshot(): CpuSnapshot | undefined {
  try {
    const cpu = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = [0, 1, 2, 5, 6, 7].reduce((sum, i) => sum + (cpu[i] ?? 0), 0);
    const stats = new Map<number, { ppid: number; cpu: number }>();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const s = procStat(entry);
      if (s) stats.set(Number(entry), s);
    }
    const children = new Map<number, number[]>();
    for (const [pid, s] of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), pid]);
    let ours = 0;
    const stack = [process.pid];
    while (stack.length > 0) {
      const pid = stack.pop() as number;
      ours += stats.get(pid)?.cpu ?? 0;
      stack.push(...(children.get(pid) ?? []));
    }
    return { wallMs: performance.now(), busy, ours };
  } catch {
    return undefined;
  }
}

/** Average cores used by other processes between two snapshots. */
export function otherCpuCores(
  start: CpuSnapshot | undefined,
  end: CpuSnapshot | undefined,
): number | undefined {
  if (!start || !end) return undefined;
  const seconds = (end.wallMs - start.wallMs) / 1000;
  if (seconds <= 0) return undefined;
  const other = end.busy - start.busy - (end.ours - start.ours);
  return round(Math.max(0, other) / CLOCK_TICKS / seconds, 2);
}

/**
 * Stop functions of everything running right now (servers, temp dirs), so Ctrl-C in run.ts can
 * stop a PostgreSQL server instead of orphaning it.
 */
const running = new Set<() => Promise<void>>();

export function trackRunning(stop: () => Promise<void>): () => void {
  running.add(stop);
  return () => running.delete(stop);
}

export async function stopEverything(): Promise<void> {
  const stops = [...running];
  running.clear();
  await Promise.allSettled(stops.map((stop) => withTimeout(stop(), 20_000, 'stop timed out')));
}
