import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parsePgbenchOutput } from '../test/helpers/pgbench.js';
import { trackRunning } from './tools.js';

/**
 * Runs the real pgbench and reads what it printed plus its per-transaction log (`-l`), which is
 * where latency percentiles come from. pgbench failing is data, not an exception: the result
 * carries the exit code, whether the run was aborted, and the first error line.
 */

export interface Transaction {
  /** Latency in microseconds. */
  latencyUs: number;
  /** Completion time, microseconds since the epoch. */
  endUs: number;
}

/** Transactions per client in --quick runs (checks the harness; numbers are not meaningful). */
const QUICK_TRANSACTIONS = 20;

/**
 * How long pgbench runs: `-T seconds`, or in --quick mode a fixed number of transactions, so
 * that a loaded machine (a test run) still completes some instead of timing out with none.
 */
export function runLength(quick: boolean, seconds: number): string[] {
  return quick ? ['-t', String(QUICK_TRANSACTIONS)] : ['-T', String(seconds)];
}

export interface PgbenchRun {
  code: number;
  stdout: string;
  /** The first lines of stderr (it can be long when every client fails). */
  stderr: string;
  timedOut: boolean;
  /** "Run was aborted": a client hit an error pgbench does not retry. */
  aborted: boolean;
  abortedClients: number;
  tps: number | undefined;
  processed: number | undefined;
  failed: number | undefined;
  latencyAvgMs: number | undefined;
  /** The first meaningful error line, when there was one. */
  error: string | undefined;
  /** Per-transaction records from the log; empty unless `perTransactionLog` was asked for. */
  transactions: Transaction[];
}

const STDERR_KEEP = 64 * 1024;

export async function runPgbench(
  bin: string,
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs: number; perTransactionLog?: boolean },
): Promise<PgbenchRun> {
  const logDir = opts.perTransactionLog
    ? await mkdtemp(path.join(tmpdir(), 'bench-pgbench-log-'))
    : undefined;
  const untrack = logDir ? trackRunning(() => rm(logDir, { recursive: true, force: true })) : undefined;
  try {
    const fullArgs = logDir ? ['-l', `--log-prefix=${path.join(logDir, 'tx')}`, ...args] : [...args];
    const { code, stdout, stderr, timedOut } = await spawnCollect(bin, fullArgs, opts);
    const parsed = parsePgbenchOutput(stdout);
    const aborted = /Run was aborted/.test(stderr) || /aborted in command/.test(stderr);
    const abortedClients = (stderr.match(/^pgbench: error: client \d+ script \d+ aborted/gm) ?? []).length;
    const latency = /^latency average = ([\d.]+) ms/m.exec(stdout);
    const transactions = logDir ? await readTransactionLog(logDir) : [];
    let error = firstError(stderr);
    if (timedOut) error = `timed out after ${Math.round(opts.timeoutMs / 1000)} s and was killed`;
    else if (!error && code !== 0) error = `exit code ${code}`;
    return {
      code,
      stdout,
      stderr,
      timedOut,
      aborted,
      abortedClients,
      ...parsed,
      latencyAvgMs: latency?.[1] === undefined ? undefined : Number(latency[1]),
      error,
      transactions,
    };
  } finally {
    untrack?.();
    if (logDir) await rm(logDir, { recursive: true, force: true });
  }
}

function spawnCollect(
  bin: string,
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs: number },
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(bin, args, {
      env: { ...process.env, PGCONNECT_TIMEOUT: '20', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < STDERR_KEEP) stderr += chunk.toString();
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    const untrack = trackRunning(async () => {
      child.kill('SIGKILL');
    });
    child.on('error', (err) => {
      stderr += `\n${err.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      untrack();
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr, timedOut });
    });
  });
}

/** The first stderr line that says what went wrong, without the "pgbench: error: " prefix. */
export function firstError(stderr: string): string | undefined {
  for (const raw of stderr.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    if (/Run was aborted/.test(line)) continue;
    if (/^pgbench: (error|fatal):/.test(line) || /^(ERROR|FATAL):/.test(line)) {
      return line.replace(/^pgbench: (error|fatal): /, '');
    }
  }
  return undefined;
}

/** Reads pgbench `-l` files: `client_id transaction_no time script_no time_epoch time_us [...]`. */
async function readTransactionLog(dir: string): Promise<Transaction[]> {
  const out: Transaction[] = [];
  for (const file of await readdir(dir)) {
    const text = await readFile(path.join(dir, file), 'utf8');
    for (const line of text.split('\n')) {
      if (!line) continue;
      const f = line.split(' ');
      const latencyUs = Number(f[2]);
      const epoch = Number(f[4]);
      const us = Number(f[5]);
      // "failed" / "skipped" transactions have no latency.
      if (!Number.isFinite(latencyUs) || !Number.isFinite(epoch) || !Number.isFinite(us)) continue;
      out.push({ latencyUs, endUs: epoch * 1_000_000 + us });
    }
  }
  return out;
}
