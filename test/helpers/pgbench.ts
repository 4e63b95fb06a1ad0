import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** The real pgbench from PATH; throws with an install hint when it is missing. */
export function findPgbench(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'pgbench');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error('pgbench not found on PATH; install it with `apt-get install -y postgresql-15`');
}

export interface PgbenchResult {
  code: number;
  stdout: string;
  stderr: string;
  /** `number of transactions actually processed: N` (undefined when not printed). */
  processed: number | undefined;
  /** `number of failed transactions: N` (undefined when not printed). */
  failed: number | undefined;
  /** `tps = X (without initial connection time)` (undefined when not printed). */
  tps: number | undefined;
}

function matchNumber(text: string, re: RegExp): number | undefined {
  const m = re.exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

export function parsePgbenchOutput(stdout: string): Omit<PgbenchResult, 'code' | 'stdout' | 'stderr'> {
  return {
    processed: matchNumber(stdout, /^number of transactions actually processed: (\d+)/m),
    failed: matchNumber(stdout, /^number of failed transactions: (\d+)/m),
    tps: matchNumber(stdout, /^tps = ([\d.]+)/m),
  };
}

/** Runs pgbench; resolves with its output and exit code (never throws on a non-zero exit). */
export function runPgbench(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs: number },
): Promise<PgbenchResult> {
  const bin = findPgbench();
  return new Promise((resolve) => {
    execFile(
      bin,
      args,
      {
        env: { ...process.env, PGCONNECT_TIMEOUT: '20', ...opts.env },
        timeout: opts.timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: string }) | null;
        let code = 0;
        if (e) code = typeof e.code === 'number' ? e.code : 1;
        const extra = e && typeof e.code !== 'number' ? `\n[runPgbench] ${e.message}` : '';
        resolve({ code, stdout, stderr: stderr + extra, ...parsePgbenchOutput(stdout) });
      },
    );
  });
}
