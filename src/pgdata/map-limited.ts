/**
 * Runs `fn` over `items`, at most `limit` at once, results in order. File work over a PGDATA
 * (~1000 files) goes through the libuv pool: many at once hides each call's round trip, too many
 * exhausts file descriptors.
 */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  return out;
}
