/**
 * Runs async work one at a time per key, in call order: each `run(key, fn)` starts `fn` only after
 * every earlier run for the same key has settled (fulfilled or rejected; a failure does not stop
 * the chain). Different keys never wait for each other. A key is forgotten once its last run
 * settles, so the map holds only keys with work pending.
 */
export class KeyedChain<K = string> {
  /** Per key: settles (never rejects) when the latest run for that key has settled. */
  private readonly tails = new Map<K, Promise<void>>();

  run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const run = previous.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }

  /**
   * Settles (never rejects) once every run for `key` started so far has settled; undefined when
   * none is pending. Runs added meanwhile are not waited for: check again after awaiting.
   */
  pending(key: K): Promise<void> | undefined {
    return this.tails.get(key);
  }

  /** Whether `key` has a run pending. */
  has(key: K): boolean {
    return this.tails.has(key);
  }

  /** How many keys have work pending. */
  get size(): number {
    return this.tails.size;
  }
}
