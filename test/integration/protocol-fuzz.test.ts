import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import {
  CounterClient,
  Findings,
  FUZZ_SCHEMA,
  formatSummary,
  Monitors,
  runProtocolFuzz,
} from '../helpers/fuzz/index.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';

/**
 * Property-based protocol fuzz (short version; `npm run fuzz` runs the long one): raw clients
 * send generated sequences of valid and invalid frontend messages, split at random offsets with
 * pauses, to one database, while a well-behaved client counts its commits on it and /healthz and
 * a second database are polled. Runs are generated from FUZZ_SEED + run index, so a failing run
 * named in the report replays with `npx tsx scripts/fuzz.ts --seed S --replay I`.
 *
 * The gateway runs in a child process: a server that spins cannot stall this test's timers.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 20);
const MAX_MESSAGE_SIZE = 64 * 1024 * 1024;
/** RSS growth that means unbounded buffering, not ordinary use. */
const MAX_RSS_GROWTH = 1.5 * 1024 ** 3;

const FUZZ_PW = 'fuzz-password-1';
const OTHER_PW = 'other-password-1';

let g: GatewayProcess;

beforeAll(async () => {
  g = await startGatewayProcess({
    templateDir: inject('templateDir'),
    env: {
      LOGIN_TIMEOUT: '10s',
      MAX_MESSAGE_SIZE: String(MAX_MESSAGE_SIZE),
      IDLE_IN_TRANSACTION_TIMEOUT: '10s',
      QUERY_WAIT_TIMEOUT: '60s',
    },
  });
  await g.createDatabase('fuzz', FUZZ_PW);
  await g.createDatabase('other', OTHER_PW);
  const client = new pg.Client(g.pgConfig('fuzz', FUZZ_PW));
  await client.connect();
  await client.query(FUZZ_SCHEMA);
  await client.end();
});
afterAll(() => g?.close());

it(`survives ${SECONDS} s of random frontend messages from 3 raw clients, losing no commit`, async () => {
  const findings = new Findings();
  const monitors = new Monitors({ gateway: g, otherDb: g.pgConfig('other', OTHER_PW), findings });
  await monitors.start();
  const counter = new CounterClient(g.pgConfig('fuzz', FUZZ_PW), findings);
  counter.start();
  let protocol: Awaited<ReturnType<typeof runProtocolFuzz>> | undefined;
  try {
    protocol = await runProtocolFuzz({
      target: { gateway: g, id: 'fuzz', password: FUZZ_PW },
      durationMs: SECONDS * 1000,
      clients: 3,
      seed: SEED,
      maxMessageSize: MAX_MESSAGE_SIZE,
      findings,
    });
  } finally {
    await counter.stop();
  }
  const report = await monitors.stop();
  const counted = await counter.verify().catch((err: Error) => {
    findings.violation('counter check failed', err.message);
    return undefined;
  });
  const summary = formatSummary({
    seed: SEED,
    protocol,
    counter: counted,
    monitors: report,
    findings,
    serverErrorLines: g.errorLines(),
  });
  console.log(summary);

  // The summary above has an example (seed, run, bytes) of every violation.
  expect(findings.violationKinds()).toEqual([]);
  expect(counted?.problems).toEqual([]);
  expect(counted?.acknowledged).toBeGreaterThan(0);
  expect(protocol?.runs).toBeGreaterThan(10);
  expect(report.serverAlive && g.alive()).toBe(true);
  expect(report.maxRss - report.baseRss).toBeLessThan(MAX_RSS_GROWTH);
  expect(g.errorLines().map((l) => l.slice(0, 300))).toEqual([]);
}, 240_000);
