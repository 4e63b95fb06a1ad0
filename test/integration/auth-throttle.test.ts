import { readdir } from 'node:fs/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Login throttling end to end: a real gateway, real TLS and SCRAM, every attempt from 127.0.0.1.
 * Small delays keep it fast. Timing is only asserted as a lower bound the gateway guarantees
 * (an answer never comes before its delay); everything else is asserted on the server's counters.
 */

const THRESHOLD = 3;
const BASE_MS = 100;
const MAX_MS = 400;
const WINDOW_MS = 2000;
/** setTimeout may fire a millisecond early against the client's clock. */
const SLACK_MS = 3;

const expectedDelay = (failuresBefore: number) =>
  failuresBefore < THRESHOLD ? 0 : Math.min(MAX_MS, BASE_MS * 2 ** (failuresBefore - THRESHOLD));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let t: TestServer;
let victimPassword: string;
let otherPassword: string;

beforeAll(async () => {
  t = await startTestServer({
    AUTH_FAIL_THRESHOLD: String(THRESHOLD),
    AUTH_BASE_DELAY: `${BASE_MS}ms`,
    AUTH_MAX_DELAY: `${MAX_MS}ms`,
    AUTH_FAIL_WINDOW: `${WINDOW_MS}ms`,
  });
  victimPassword = await t.createDatabase('victim');
  otherPassword = await t.createDatabase('other');
});
afterAll(() => t?.close());

interface Outcome {
  ms: number;
  code: string | undefined;
  message: string | undefined;
}

/** One login with node-postgres: how long until the answer, and the error if refused. */
async function login(id: string, password: string, extra: Partial<pg.ClientConfig> = {}): Promise<Outcome> {
  const client = new pg.Client(t.pgConfig(id, password, extra));
  client.on('error', () => undefined);
  const start = performance.now();
  const err = (await client.connect().then(
    () => undefined,
    (e: unknown) => e,
  )) as { code?: string; message: string } | undefined;
  const ms = performance.now() - start;
  await client.end().catch(() => undefined);
  return { ms, code: err?.code, message: err?.message };
}

async function counters(): Promise<{ failures: number; throttled: number }> {
  const res = await fetch(`http://127.0.0.1:${t.server.adminPort}/metrics`);
  const text = await res.text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return {
    failures: read('pglite_gateway_auth_failures_total'),
    throttled: read('pglite_gateway_auth_throttled_total'),
  };
}

/** `n` wrong logins in a row; each answer past the threshold came no sooner than its delay. */
async function wrongInARow(id: string, n: number): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let i = 0; i < n; i++) {
    const outcome = await login(id, 'not-the-password-at-all');
    expect(outcome.code, `attempt ${i + 1}`).toBe('28P01');
    expect(outcome.ms, `attempt ${i + 1}`).toBeGreaterThanOrEqual(expectedDelay(i) - SLACK_MS);
    outcomes.push(outcome);
  }
  return outcomes;
}

/** A successful login: it resets this address's count (it may itself be delayed first). */
async function resetAddress(): Promise<void> {
  expect((await login('other', otherPassword)).code).toBeUndefined();
}

describe('login throttling', () => {
  it('delays wrong passwords from one address exponentially past the threshold', async () => {
    const before = await counters();
    await wrongInARow('victim', 8);
    const after = await counters();
    expect(after.failures - before.failures).toBe(8);
    expect(after.throttled - before.throttled).toBe(8 - THRESHOLD);
  });

  it('delays the right password too while throttled, then a success resets the address only', async () => {
    await resetAddress();
    const guardedPassword = await t.createDatabase('guarded');
    await wrongInARow('guarded', THRESHOLD + 1);
    const before = await counters();
    // Throttled by the address: the answer waits, whatever it is.
    const first = await login('other', otherPassword);
    expect(first.code).toBeUndefined();
    expect(first.ms).toBeGreaterThanOrEqual(expectedDelay(THRESHOLD + 1) - SLACK_MS);
    // The success reset the address: another database is not throttled any more...
    expect((await login('other', otherPassword)).code).toBeUndefined();
    expect((await counters()).throttled - before.throttled).toBe(1);
    // ...but the database that was guessed at still is, for everyone.
    const guarded = await login('guarded', guardedPassword);
    expect(guarded.code).toBeUndefined();
    expect(guarded.ms).toBeGreaterThanOrEqual(expectedDelay(THRESHOLD + 1) - SLACK_MS);
    expect((await counters()).throttled - before.throttled).toBe(2);
  });

  it('queues parallel attempts: more connections do not guess faster', async () => {
    await t.createDatabase('crowded');
    await wrongInARow('crowded', THRESHOLD + 2); // now at the cap
    const start = performance.now();
    const ends = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const outcome = await login('crowded', 'parallel-wrong-guess');
        expect(outcome.code).toBe('28P01');
        return performance.now() - start;
      }),
    );
    // Each answer is due MAX_MS after the one queued before it.
    ends.sort((a, b) => a - b);
    ends.forEach((ms, k) => {
      expect(ms, `answer ${k + 1}`).toBeGreaterThanOrEqual((k + 1) * MAX_MS - SLACK_MS);
    });
  });

  it('treats an unknown database exactly like a wrong password', async () => {
    await resetAddress();
    await t.createDatabase('known');
    const beforeKnown = await counters();
    const knownRun = await wrongInARow('known', 6);
    await resetAddress();
    const beforeGhost = await counters();
    const ghostRun = await wrongInARow('ghost', 6);
    const after = await counters();
    // Same counts, same delays (checked in wrongInARow), same error.
    expect(beforeGhost.throttled - beforeKnown.throttled).toBe(6 - THRESHOLD + 1); // + resetAddress
    expect(after.throttled - beforeGhost.throttled).toBe(6 - THRESHOLD);
    expect(after.failures - beforeGhost.failures).toBe(6);
    const messages = new Set([...knownRun, ...ghostRun].map((o) => o.message));
    expect(messages).toEqual(new Set(['password authentication failed for user "postgres"']));
    expect(await readdir(t.dataDir)).not.toContain('ghost');
  });

  it('lets the right password in unthrottled once the window has passed', async () => {
    await sleep(WINDOW_MS + 200);
    const before = await counters();
    expect((await login('victim', victimPassword)).code).toBeUndefined();
    expect((await login('ghost', 'anything-at-all')).code).toBe('28P01');
    const after = await counters();
    expect(after.throttled).toBe(before.throttled);
    expect(after.failures - before.failures).toBe(1);
  });
});

describe('passwords', () => {
  const post = (path: string, body: unknown) =>
    fetch(`http://127.0.0.1:${t.server.adminPort}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('refuses a password shorter than MIN_PASSWORD_LENGTH with 400', async () => {
    const created = await post('/v1/databases', { id: 'short', password: 'x' });
    expect(created.status).toBe(400);
    expect(await created.json()).toEqual({ error: 'password must be at least 12 characters long' });
    expect((await post('/v1/databases/victim/password', { password: 'short-pw' })).status).toBe(400);
    const generated = await post('/v1/databases', { id: 'long-enough' });
    expect(generated.status).toBe(201);
    expect(((await generated.json()) as { password: string }).password.length).toBeGreaterThanOrEqual(12);
  });
});

describe('LOGIN_TIMEOUT', () => {
  let slow: TestServer;
  beforeAll(async () => {
    slow = await startTestServer({
      LOGIN_TIMEOUT: '1s',
      AUTH_FAIL_THRESHOLD: '1',
      AUTH_BASE_DELAY: '5s',
      AUTH_MAX_DELAY: '5s',
    });
    await slow.createDatabase('slow');
  });
  afterAll(() => slow?.close());

  it('still ends a login delayed past it with 08P01', async () => {
    const attempt = async () => {
      const client = new pg.Client(slow.pgConfig('slow', 'not-the-password-at-all'));
      client.on('error', () => undefined);
      const err = await client.connect().then(
        () => undefined,
        (e: { code?: string }) => e,
      );
      await client.end().catch(() => undefined);
      return err?.code;
    };
    expect(await attempt()).toBe('28P01');
    expect(await attempt()).toBe('08P01');
  });
});
