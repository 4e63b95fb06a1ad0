import type { Logger } from './log.js';

/**
 * Warnings that anyone who reaches a port can cause (a peer port probed without the cluster
 * secret, a scanner retrying a handshake) are logged once per source and interval: the first one
 * in full, the repeats as a count on the next one logged. Without it a single client could fill
 * the log as fast as it can connect.
 */
export class ThrottledWarning {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
    private readonly intervalMs = 60_000,
    /** Sources remembered; past it the oldest are forgotten (a forgotten one logs again). */
    private readonly maxSources = 1_000,
  ) {}

  warn(source: string, fields: Record<string, unknown>, now = Date.now()): void {
    const seen = this.last.get(source);
    if (seen && now - seen.at < this.intervalMs) {
      seen.suppressed++;
      return;
    }
    this.last.delete(source);
    if (this.last.size >= this.maxSources) {
      const oldest = this.last.keys().next().value;
      if (oldest !== undefined) this.last.delete(oldest);
    }
    this.last.set(source, { at: now, suppressed: 0 });
    this.logger.warn(
      { ...fields, ...(seen?.suppressed ? { suppressed: seen.suppressed } : {}) },
      this.message,
    );
  }
}
