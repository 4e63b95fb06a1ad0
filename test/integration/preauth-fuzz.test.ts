import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Findings, formatSummary, Monitors, runPreauthFuzz } from '../helpers/fuzz/index.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { loginStartupMessage, rawLogin, rawQuery } from '../helpers/raw-auth.js';

/**
 * Pre-authentication fuzz (short version; `npm run fuzz` runs the long one) with LOGIN_TIMEOUT
 * 2 s: random bytes, partial and oversized packets, garbage and truncated TLS ClientHellos,
 * slowloris and idle connections must all be closed by the server in bounded time, open no
 * database and leak no internal error text, while /healthz and another database keep answering.
 * First the deterministic splits: every offset of the SSLRequest and of the StartupMessage, and
 * one byte at a time, must still log in.
 *
 * The gateway runs in a child process: a server that spins on a split packet cannot stall this
 * test's timers, so such a server fails these tests (bounded waits) instead of hanging them.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 12);
const LOGIN_TIMEOUT_MS = 2000;
/** Beyond LOGIN_TIMEOUT: a connection still open after this is a hang, not slowness. */
const MARGIN_MS = 5000;
const MAX_RSS_GROWTH = 1.5 * 1024 ** 3;
const TARGET_PW = 'target-password-1';
const SPLIT_PW = 'split-password-1';
const OTHER_PW = 'other-password-1';

let g: GatewayProcess;

beforeAll(async () => {
  g = await startGatewayProcess({
    templateDir: inject('templateDir'),
    env: { LOGIN_TIMEOUT: `${LOGIN_TIMEOUT_MS}ms` },
  });
  await g.createDatabase('target', TARGET_PW);
  await g.createDatabase('split', SPLIT_PW);
  await g.createDatabase('other', OTHER_PW);
});
afterAll(() => g?.close());

describe('pre-auth packets split by TCP', () => {
  /** Logs in with the given splits and runs a query; every wait is bounded by `stepTimeoutMs`. */
  const loginAndQuery = async (splits: { ssl?: number[]; startup?: number[]; pauseMs: number }) => {
    const session = await rawLogin({
      port: g.port,
      ca: g.ca,
      id: 'split',
      password: SPLIT_PW,
      sslRequestSplits: splits.ssl ?? [],
      startupSplits: splits.startup ?? [],
      pauseMs: splits.pauseMs,
      stepTimeoutMs: 5000,
    });
    try {
      return await rawQuery(session, 'select 41 + 1', 5000);
    } finally {
      session.socket.destroy();
    }
  };

  it('logs in with the SSLRequest and the StartupMessage split at every offset, and one byte at a time', async () => {
    const findings = new Findings();
    const monitors = new Monitors({ gateway: g, otherDb: g.pgConfig('other', OTHER_PW), findings });
    await monitors.start();
    const failures: string[] = [];
    const attempt = async (what: string, splits: Parameters<typeof loginAndQuery>[0]) => {
      // After the first failure the server may be wedged: stop there rather than time out 50 times.
      if (failures.length > 0) return;
      try {
        const rows = await loginAndQuery(splits);
        if (rows[0] !== '42') failures.push(`${what}: query answered ${JSON.stringify(rows)}`);
      } catch (err) {
        failures.push(`${what}: ${(err as Error).message}`);
      }
    };
    try {
      for (let at = 1; at < 8; at++) {
        await attempt(`SSLRequest split at ${at}`, { ssl: [at], pauseMs: 5 + ((at * 7) % 16) });
      }
      const startupLength = loginStartupMessage().length;
      for (let at = 1; at < startupLength; at++) {
        await attempt(`StartupMessage split at ${at}`, { startup: [at], pauseMs: 5 + ((at * 7) % 16) });
      }
      await attempt('SSLRequest one byte at a time', { ssl: [1, 2, 3, 4, 5, 6, 7], pauseMs: 20 });
      await attempt('both one byte at a time', {
        ssl: [1, 2, 3, 4, 5, 6, 7],
        startup: Array.from({ length: startupLength - 1 }, (_, i) => i + 1),
        pauseMs: 5,
      });
    } finally {
      const report = await monitors.stop();
      if (failures.length > 0 || findings.violations.size > 0) {
        console.log(
          formatSummary({ seed: SEED, monitors: report, findings, serverErrorLines: g.errorLines() }),
        );
      }
      expect(failures).toEqual([]);
      expect(findings.violationKinds()).toEqual([]);
      expect(report.serverAlive && g.alive()).toBe(true);
    }
  }, 120_000);
});

it(`closes ${SECONDS} s of random pre-auth traffic and 100 idle connections within LOGIN_TIMEOUT, opening no database`, async () => {
  const findings = new Findings();
  const monitors = new Monitors({ gateway: g, otherDb: g.pgConfig('other', OTHER_PW), findings });
  await monitors.start();
  let preauth: Awaited<ReturnType<typeof runPreauthFuzz>> | undefined;
  try {
    preauth = await runPreauthFuzz({
      gateway: g,
      id: 'target',
      password: TARGET_PW,
      loginTimeoutMs: LOGIN_TIMEOUT_MS,
      marginMs: MARGIN_MS,
      durationMs: SECONDS * 1000,
      clients: 4,
      seed: SEED,
      idle: 100,
      findings,
    });
  } finally {
    const report = await monitors.stop();
    const summary = formatSummary({
      seed: SEED,
      preauth,
      monitors: report,
      findings,
      serverErrorLines: g.errorLines(),
    });
    console.log(summary);
    // The summary above has an example of every violation.
    expect(findings.violationKinds()).toEqual([]);
    expect(preauth?.idleConnections).toBe(100);
    expect(preauth?.actions).toBeGreaterThan(8);
    // Only the databases of the monitors and of the split logins above were opened: no pre-auth
    // traffic reached its database.
    expect([...g.openedDatabases()].filter((id) => id !== 'other' && id !== 'split')).toEqual([]);
    expect(g.openedDatabases().has('other')).toBe(true); // the log line this check reads still exists
    expect(report.maxOpenDatabases).toBeLessThanOrEqual(2);
    expect((await g.metrics()).openDatabases).toBeLessThanOrEqual(2);
    expect(report.serverAlive && g.alive()).toBe(true);
    expect(report.maxRss - report.baseRss).toBeLessThan(MAX_RSS_GROWTH);
    expect(g.errorLines().map((l) => l.slice(0, 300))).toEqual([]);
  }
}, 120_000);
