import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';

/**
 * One process per data directory: PGlite silently corrupts a PGDATA opened twice, and so would
 * the embedded catalog. The lock file records pid and node id; a lock whose process is gone is
 * stale and taken over.
 */

export class DataDirLockedError extends Error {
  constructor(
    readonly pid: number,
    readonly nodeId: string,
  ) {
    super(`data directory is in use by process ${pid} on node ${nodeId}`);
  }
}

export interface DataDirLock {
  release(): Promise<void>;
}

const LOCK_FILE = 'gateway.lock';
/** Directories this process holds; a lock file with our own pid is otherwise a stale one (pid 1 in containers). */
const heldHere = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Returns the live holder of the lock, if any. */
export async function readLockHolder(dataDir: string): Promise<{ pid: number; nodeId: string } | undefined> {
  const text = await readFile(path.join(dataDir, LOCK_FILE), 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const [pid, nodeId] = text.trim().split('\n');
  const holder = { pid: Number(pid), nodeId: nodeId ?? '' };
  return Number.isInteger(holder.pid) && alive(holder.pid) ? holder : undefined;
}

export async function acquireDataDirLock(dataDir: string, nodeId: string): Promise<DataDirLock> {
  const file = path.join(dataDir, LOCK_FILE);
  if (heldHere.has(file)) throw new DataDirLockedError(process.pid, nodeId);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n${nodeId}\n`);
      await handle.close();
      heldHere.add(file);
      return {
        release: async () => {
          heldHere.delete(file);
          const holder = await readFile(file, 'utf8').catch(() => '');
          if (holder.startsWith(`${process.pid}\n`)) await rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = await readLockHolder(dataDir);
      if (holder && holder.pid !== process.pid) throw new DataDirLockedError(holder.pid, holder.nodeId);
      await rm(file, { force: true });
    }
  }
  throw new Error(`could not lock ${dataDir}`);
}
