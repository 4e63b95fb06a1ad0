/**
 * The long protocol fuzz: `npm run fuzz -- [--minutes 5] [--seed N] [--clients 3]`.
 *
 * Starts a real gateway (`serve`, child process, LOGIN_TIMEOUT 2 s) and for N minutes runs, at
 * once: raw clients sending generated valid and invalid frontend messages to one database (split
 * at random offsets, with pauses), a well-behaved client counting its commits there, generated
 * pre-authentication traffic (random, partial, oversized, garbage TLS, slowloris, idle) aimed at
 * another database that must never open, and monitors polling /healthz, a third database and
 * /metrics. Prints a summary and exits 1 on any violation. The generators are the ones the
 * short integration tests use (test/helpers/fuzz/).
 *
 * Reproducing: every run is generated from seed + index. `--replay 17` (with the seed printed by
 * the failing run) replays protocol run 17 alone and then probes the shared session with a fresh
 * client, so a leak can be pinned on one run; `--replay 10-20` replays a range one by one.
 * `FUZZ_GATEWAY_DIR=/path/to/checkout` runs another checkout's server (e.g. an older commit).
 */
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import {
  CounterClient,
  describeRun,
  Findings,
  FUZZ_SCHEMA,
  formatSummary,
  Monitors,
  protocolRunAt,
  runPreauthFuzz,
  runProtocolFuzz,
  runProtocolSequence,
} from '../test/helpers/fuzz/index.js';
import { type GatewayProcess, startGatewayProcess } from '../test/helpers/gateway-process.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    seed: { type: 'string' },
    clients: { type: 'string', default: '3' },
    replay: { type: 'string' },
    'pool-mode': { type: 'string', default: 'transaction' },
    'no-preauth': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (values.help) {
  console.log(
    'usage: fuzz [--minutes 5] [--seed N] [--clients 3] [--pool-mode transaction|session] [--no-preauth]\n' +
      '       fuzz --seed N --replay I[-J]',
  );
  process.exit(0);
}

const minutes = Number(values.minutes);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const clients = Number(values.clients);
if (!(minutes > 0) || !Number.isInteger(seed) || !(clients > 0)) {
  console.error('fuzz: --minutes, --seed and --clients must be positive numbers');
  process.exit(2);
}

const LOGIN_TIMEOUT_MS = 2000;
const MAX_MESSAGE_SIZE = 64 * 1024 * 1024;
const MAX_RSS_GROWTH = 1.5 * 1024 ** 3;
const PW = { fuzz: 'fuzz-password-1', other: 'other-password-1', target: 'target-password-1' };

const log = (line: string) => console.log(`[fuzz ${new Date().toISOString().slice(11, 19)}] ${line}`);

async function start(): Promise<GatewayProcess> {
  log(`starting the gateway (seed ${seed})`);
  const g = await startGatewayProcess({
    // Built once and reused by later runs (rebuilt when PGlite changes).
    templateDir: path.join(tmpdir(), 'pglite-gateway-fuzz-template'),
    env: {
      LOGIN_TIMEOUT: `${LOGIN_TIMEOUT_MS}ms`,
      MAX_MESSAGE_SIZE: String(MAX_MESSAGE_SIZE),
      IDLE_IN_TRANSACTION_TIMEOUT: '10s',
      QUERY_WAIT_TIMEOUT: '60s',
      POOL_MODE: values['pool-mode'],
    },
  });
  for (const [id, password] of Object.entries(PW)) await g.createDatabase(id, password);
  const client = new pg.Client(g.pgConfig('fuzz', PW.fuzz));
  await client.connect();
  await client.query(FUZZ_SCHEMA);
  await client.end();
  log(`gateway pid ${g.pid} on port ${g.port}, admin ${g.adminPort}`);
  return g;
}

/** One transaction of the well-behaved client on a fresh connection: what it got. */
async function probe(g: GatewayProcess): Promise<string> {
  const client = new pg.Client({ ...g.pgConfig('fuzz', PW.fuzz), query_timeout: 20_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('begin');
    await client.query('update counter set n = n + 1');
    const role = (await client.query('select current_user as u, current_setting($1) as p', ['search_path']))
      .rows[0];
    await client.query('commit');
    return `ok (current_user ${role?.u}, search_path ${role?.p})`;
  } catch (err) {
    return `FAILED: ${(err as { code?: string }).code} ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function replay(range: string): Promise<number> {
  const [from, to] = range.split('-').map(Number) as [number, number | undefined];
  const g = await start();
  let bad = 0;
  try {
    for (let index = from; index <= (to ?? from); index++) {
      const run = protocolRunAt(seed, index, MAX_MESSAGE_SIZE);
      const warnings = g.warnLines().length;
      const errors = g.errorLines().length;
      const findings = new Findings();
      await runProtocolSequence(
        { target: { gateway: g, id: 'fuzz', password: PW.fuzz }, findings },
        run,
        `seed ${seed} run ${index}`,
      ).catch((err: Error) => findings.violation('replay failed', err.message));
      const after = await probe(g);
      const failed = findings.violations.size > 0 || after.startsWith('FAILED');
      if (failed) bad++;
      console.log(`run ${index}:\n${describeRun(run)}`);
      console.log(
        `  outcome ${JSON.stringify(Object.fromEntries(findings.outcomes))}, errors ${JSON.stringify(Object.fromEntries(findings.errorsByCode))}`,
      );
      for (const [kind, v] of findings.violations)
        console.log(`  VIOLATION ${kind}: ${v.examples[0]?.split('\n')[0]}`);
      console.log(`  next client: ${after}`);
      for (const line of [...g.warnLines().slice(warnings), ...g.errorLines().slice(errors)]) {
        console.log(`  server log: ${line.slice(0, 400)}`);
      }
      if (!g.alive()) {
        console.log(`  the server exited: ${g.exitStatus()}`);
        return 1;
      }
    }
    for (const line of g.errorLines().slice(0, 10)) console.log(`server error log: ${line.slice(0, 600)}`);
  } finally {
    await g.close();
  }
  return bad > 0 || g.errorLines().length > 0 ? 1 : 0;
}

async function fuzz(): Promise<number> {
  const g = await start();
  const findings = new Findings();
  const durationMs = minutes * 60_000;
  const monitors = new Monitors({ gateway: g, otherDb: g.pgConfig('other', PW.other), findings });
  await monitors.start();
  const counter = new CounterClient(g.pgConfig('fuzz', PW.fuzz), findings);
  counter.start();
  const progress = setInterval(() => {
    g.metrics(5000).then(
      (m) =>
        log(
          `RSS ${Math.round(m.rss / 2 ** 20)} MiB, ${m.connectedClients} clients, ${m.openDatabases} open databases`,
        ),
      () => log('/metrics did not answer within 5 s'),
    );
  }, 30_000);
  log(
    `fuzzing for ${minutes} min with ${clients} protocol clients${values['no-preauth'] ? '' : ' and 4 pre-auth clients'}`,
  );
  try {
    const [protocol, preauth] = await Promise.all([
      runProtocolFuzz({
        target: { gateway: g, id: 'fuzz', password: PW.fuzz },
        durationMs,
        clients,
        seed,
        maxMessageSize: MAX_MESSAGE_SIZE,
        findings,
        log,
      }),
      values['no-preauth']
        ? Promise.resolve(undefined)
        : runPreauthFuzz({
            gateway: g,
            id: 'target',
            password: PW.target,
            loginTimeoutMs: LOGIN_TIMEOUT_MS,
            durationMs,
            clients: 4,
            seed,
            idle: 100,
            findings,
            log,
          }),
    ]);
    clearInterval(progress);
    await counter.stop();
    const report = await monitors.stop();
    const counted = await counter.verify().catch((err: Error) => {
      findings.violation('counter check failed', err.message);
      return undefined;
    });
    if (g.openedDatabases().has('target')) {
      findings.violation('pre-auth traffic opened a database', 'the "target" database was opened');
    }
    if (report.maxRss - report.baseRss > MAX_RSS_GROWTH) {
      findings.violation('RSS grew by more than 1.5 GiB', `${report.baseRss} -> ${report.maxRss}`);
    }
    if (!g.alive()) findings.violation('the server process exited', `${g.exitStatus()}`);
    for (const line of g.errorLines()) findings.violation('the server logged an error', line.slice(0, 1000));
    console.log(
      formatSummary({
        seed,
        protocol,
        preauth,
        counter: counted,
        monitors: report,
        findings,
        serverErrorLines: g.errorLines(),
      }),
    );
    const ok = findings.violations.size === 0 && counted?.ok === true;
    console.log(
      ok ? 'fuzz: OK' : `fuzz: FAILED (reproduce runs with: npm run fuzz -- --seed ${seed} --replay <run>)`,
    );
    return ok ? 0 : 1;
  } finally {
    clearInterval(progress);
    await g.close();
  }
}

const code = await (values.replay === undefined ? fuzz() : replay(values.replay)).catch((err: unknown) => {
  console.error(`fuzz: ${(err as Error).stack ?? err}`);
  return 2;
});
process.exit(code);
