import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { internals, sendCancel } from '../helpers/clients.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

/** Issue 5: large results stream from the database's worker to the client, with backpressure. */
let t: TestServer;
let timed: TestServer;

beforeAll(async () => {
  [t, timed] = await Promise.all([startTestServer(), startTestServer({ STATEMENT_TIMEOUT: '2s' })]);
});
afterAll(async () => {
  await Promise.all([t?.close(), timed?.close()]);
});

/** Pauses the client's socket at its 10th row, for `ms`. */
function pauseAtTenthRow(client: pg.Client, ms: number) {
  const socket = (internals(client).connection as unknown as { stream: NodeJS.ReadableStream }).stream;
  let paused = false;
  return (rows: number) => {
    if (paused || rows < 10) return;
    paused = true;
    socket.pause();
    setTimeout(() => socket.resume(), ms);
  };
}

interface Streamed {
  rows: number;
  sum: number;
  padBytes: number;
  error?: { code?: string };
}

/** Runs `text`, counting rows as they arrive (none are kept); `onRow` sees each running count. */
function stream(client: pg.Client, text: string, onRow: (rows: number) => void = () => undefined) {
  const result: Streamed = { rows: 0, sum: 0, padBytes: 0 };
  const query = client.query(new pg.Query(text));
  query.on('row', (row: { i: number; pad: string }) => {
    result.rows++;
    result.sum += row.i;
    result.padBytes += row.pad.length;
    onRow(result.rows);
  });
  return new Promise<Streamed>((resolve) => {
    query.on('error', (err: Error & { code?: string }) => resolve({ ...result, error: err }));
    query.on('end', () => resolve(result));
  });
}

describe('streaming results', () => {
  it('sends the first rows of a result while the statement is still running', async () => {
    const pw = await t.createDatabase('stream-early');
    await withClient(t.pgConfig('stream-early', pw), async (c) => {
      // ~2 MB of rows, then a 20 s pause: the rows must arrive before it ends. The first row
      // triggers a cancel, which can only fail the statement if it came while it still ran.
      let cancelled = false;
      const outcome = await stream(
        c,
        `select i, repeat('x', 1000) as pad, case when i = 2000 then pg_sleep(20) end as wait
           from generate_series(1, 3000) i`,
        () => {
          if (cancelled) return;
          cancelled = true;
          const { processID, secretKey } = internals(c);
          void sendCancel(t, 'stream-early', processID, secretKey);
        },
      );
      expect(outcome.error?.code).toBe('57014');
      expect(outcome.rows).toBeGreaterThan(0);
      expect(outcome.rows).toBeLessThan(2000);
      expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
    });
  });

  it('a client that stops reading a large result gets all of it once it reads again', async () => {
    const pw = await t.createDatabase('stream-slow');
    await withClient(t.pgConfig('stream-slow', pw), async (c) => {
      // ~130 MB: more than the gateway lets pile up for a client that does not read (64 MiB).
      // It arrives whole only if the statement waits for the client instead of running ahead.
      const rows = 125_000;
      const outcome = await stream(
        c,
        `select i, repeat(chr(65 + i % 26), 1000) as pad from generate_series(1, ${rows}) i`,
        pauseAtTenthRow(c, 3000),
      );
      expect(outcome.error).toBeUndefined();
      expect(outcome.rows).toBe(rows);
      expect(outcome.sum).toBe((rows * (rows + 1)) / 2);
      expect(outcome.padBytes).toBe(rows * 1000);
      // The session carries on, and another client gets its turn.
      expect((await c.query('select 2 as two')).rows[0].two).toBe(2);
      await withClient(t.pgConfig('stream-slow', pw), async (other) => {
        expect((await other.query('select 3 as three')).rows[0].three).toBe(3);
      });
    });
  }, 60_000);

  it('STATEMENT_TIMEOUT still interrupts a statement waiting for a client that stopped reading', async () => {
    const pw = await timed.createDatabase('stream-stuck');
    await withClient(timed.pgConfig('stream-stuck', pw), async (c) => {
      // The statement outlives the 2 s timeout only because it waits for the client (paused 5 s).
      const outcome = await stream(
        c,
        `select i, repeat('y', 1000) as pad from generate_series(1, 125000) i`,
        pauseAtTenthRow(c, 5000),
      );
      expect(outcome.error?.code).toBe('57014');
      expect(outcome.rows).toBeGreaterThan(0);
      expect(outcome.rows).toBeLessThan(125_000);
      expect((await c.query('select 4 as four')).rows[0].four).toBe(4);
    });
  }, 60_000);
});
