import { randomInt } from 'node:crypto';

/**
 * BackendKeyData for every client (PGlite has none): a random process id and secret per client.
 * A CancelRequest with both right runs that client's cancel action; anything else is ignored.
 */
export class CancelKeys {
  private readonly keys = new Map<number, { secretKey: number; cancel: () => void }>();

  register(cancel: () => void): { processId: number; secretKey: number } {
    let processId: number;
    do processId = randomInt(1, 2 ** 31 - 1);
    while (this.keys.has(processId));
    const secretKey = randomInt(-(2 ** 31), 2 ** 31 - 1);
    this.keys.set(processId, { secretKey, cancel });
    return { processId, secretKey };
  }

  unregister(processId: number): void {
    this.keys.delete(processId);
  }

  /** Returns whether a client was cancelled. */
  cancel(processId: number, secretKey: number): boolean {
    const entry = this.keys.get(processId);
    if (!entry || entry.secretKey !== secretKey) return false;
    entry.cancel();
    return true;
  }
}
