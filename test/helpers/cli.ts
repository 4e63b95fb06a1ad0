import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI (`node --import tsx src/cli/index.ts ...`) with exactly `env` (plus PATH). */
export function runCli(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/index.ts', ...args],
      {
        cwd: repo,
        env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', ...env },
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The password a `db create`/`upload --create`/`db clone` printed. */
export function printedPassword(stdout: string): string {
  const match = /^password: +(\S+)/m.exec(stdout);
  if (!match?.[1] || match[1] === '(unchanged)') throw new Error(`no password in:\n${stdout}`);
  return match[1];
}
