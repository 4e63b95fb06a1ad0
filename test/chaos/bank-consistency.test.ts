import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { internals, killSocket, sendCancel } from '../helpers/clients.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Money transfers between accounts from many clients sharing one database, while a chaos loop
 * cancels their statements, times them out and drops their sockets (each interrupt restarts the
 * database's engine). What must hold, as on Postgres: the total never changes; every transfer
 * whose COMMIT was acknowledged is there; none that was answered with an error is (a retry would
 * move the money twice); each account's balance is its ledger's sum; no client ever sees another
 * client's settings; nothing is logged as an internal error. The seed is printed for a rerun.
 */

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 30);
const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
const ACCOUNTS = 12;
const WORKERS = 10;
const INITIAL = 1000;
/** A client operation taking longer than this is a hang. */
const OP_TIMEOUT_MS = 30_000;

let state = SEED;
/** mulberry32: a seeded generator, so a failing run can be repeated. */
function random(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = Math.imul(state ^ (state >>> 15), state | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} took over ${OP_TIMEOUT_MS} ms`)), OP_TIMEOUT_MS);
  });
  return Promise.race([promise, hang]).finally(() => clearTimeout(timer));
}

/** What the client was told about a transfer. */
type Fate = 'acknowledged' | 'failed' | 'unknown';

describe('bank transfers under cancels, timeouts and dropped sockets', () => {
  let gw: TestServer;
  let pw = '';
  const fates = new Map<string, Fate>();
  /** What a failed transfer's client was told. */
  const why = new Map<string, string>();
  const settingsSeen: string[] = [];
  let chaosEvents = 0;

  beforeAll(async () => {
    gw = await startTestServer({ IDLE_IN_TRANSACTION_TIMEOUT: '10s', QUERY_WAIT_TIMEOUT: '20s' });
    pw = await gw.createDatabase('bank');
    const c = new pg.Client(gw.pgConfig('bank', pw));
    await c.connect();
    await c.query(`create table accounts (id int primary key, balance int not null);
      insert into accounts select g, ${INITIAL} from generate_series(1, ${ACCOUNTS}) g;
      create table transfers (id uuid primary key, src int not null, dst int not null, amount int not null)`);
    await c.end();
  });
  afterAll(() => gw?.close());

  const connect = async (name: string) => {
    const client = new pg.Client({ ...gw.pgConfig('bank', pw), application_name: name });
    client.on('error', () => undefined);
    await bounded(client.connect(), 'connect');
    return client;
  };

  /** One transfer in one of the ways clients send them; returns what the client was told. */
  async function transfer(client: pg.Client, name: string): Promise<Fate> {
    const id = randomUUID();
    const src = between(1, ACCOUNTS);
    const dst = (src % ACCOUNTS) + 1;
    const amount = between(1, 50);
    const sleepy = random() < 0.3 ? `select pg_sleep(${between(5, 40) / 1000});` : '';
    const way = between(0, 2);
    try {
      if (random() < 0.3)
        await bounded(client.query(`set statement_timeout = '${between(15, 60)}ms'`), 'set');
      if (way === 0) {
        // One query string: the block and its COMMIT travel together.
        await bounded(
          client.query(`begin; update accounts set balance = balance - ${amount} where id = ${src};
            update accounts set balance = balance + ${amount} where id = ${dst}; ${sleepy}
            insert into transfers values ('${id}', ${src}, ${dst}, ${amount}); commit`),
          'transfer',
        );
      } else {
        await bounded(client.query('begin'), 'begin');
        const { rows } = await bounded(
          client.query<{ app: string }>("select current_setting('application_name') as app"),
          'setting',
        );
        settingsSeen.push(rows[0]?.app === name ? 'own' : `${name} saw ${rows[0]?.app}`);
        await bounded(
          client.query('update accounts set balance = balance - $1 where id = $2', [amount, src]),
          'u1',
        );
        if (way === 2) {
          // A savepoint rolled back in the middle changes nothing.
          await bounded(client.query('savepoint s; update accounts set balance = 0; rollback to s'), 'sp');
        }
        await bounded(
          client.query('update accounts set balance = balance + $1 where id = $2', [amount, dst]),
          'u2',
        );
        if (sleepy) await bounded(client.query(sleepy), 'sleep');
        await bounded(
          client.query('insert into transfers values ($1, $2, $3, $4)', [id, src, dst, amount]),
          'ins',
        );
        await bounded(client.query('commit'), 'commit');
      }
      fates.set(id, 'acknowledged');
      return 'acknowledged';
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (String((err as Error).message).startsWith('hang')) throw err;
      // An error from the server (a SQLSTATE) means the transfer did not happen; a connection
      // that died under it leaves it unknown, as on Postgres.
      const fate: Fate = code && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('57P') ? 'failed' : 'unknown';
      fates.set(id, fate);
      if (fate === 'failed') why.set(id, `way ${way} ${code} ${(err as Error).message}`);
      await client.query('rollback').catch(() => undefined);
      return fate;
    } finally {
      await client.query('set statement_timeout = 0').catch(() => undefined);
    }
  }

  it('keeps every invariant', async () => {
    const deadline = Date.now() + SECONDS * 1000;
    const clients = new Map<number, pg.Client>();
    const worker = async (n: number) => {
      const name = `worker-${n}`;
      while (Date.now() < deadline) {
        let client = clients.get(n);
        if (!client) {
          client = await connect(name);
          clients.set(n, client);
        }
        const fate = await transfer(client, name);
        if (fate === 'unknown') {
          clients.delete(n);
          await client.end().catch(() => undefined);
        }
      }
    };
    const chaos = async () => {
      while (Date.now() < deadline) {
        await sleep(between(100, 400));
        const victim = clients.get(between(0, WORKERS - 1));
        if (!victim) continue;
        chaosEvents++;
        if (random() < 0.7) {
          const { processID, secretKey } = internals(victim);
          await sendCancel(gw, 'bank', processID, secretKey).catch(() => undefined);
        } else {
          killSocket(victim);
        }
      }
    };
    console.log(`bank chaos seed ${SEED} (CHAOS_SEED=${SEED} to repeat), ${SECONDS} s`);
    await Promise.all([...Array.from({ length: WORKERS }, (_, n) => worker(n)), chaos()]);
    await Promise.all([...clients.values()].map((c) => c.end().catch(() => undefined)));

    const check = await connect('checker');
    try {
      const total = await check.query<{ sum: number }>('select sum(balance)::int as sum from accounts');
      expect(total.rows[0]?.sum).toBe(ACCOUNTS * INITIAL);
      const ledger = await check.query<{ id: string }>('select id::text from transfers');
      const present = new Set(ledger.rows.map((r) => r.id));
      const byFate = (fate: Fate) => [...fates].filter(([, f]) => f === fate).map(([id]) => id);
      expect(byFate('acknowledged').filter((id) => !present.has(id))).toEqual([]);
      expect(
        byFate('failed')
          .filter((id) => present.has(id))
          .map((id) => why.get(id)),
      ).toEqual([]);
      const mismatched = await check.query(`select a.id from accounts a where a.balance <> ${INITIAL}
        + coalesce((select sum(amount) from transfers where dst = a.id), 0)
        - coalesce((select sum(amount) from transfers where src = a.id), 0)`);
      expect(mismatched.rows).toEqual([]);
      console.log(
        `transfers: ${byFate('acknowledged').length} acknowledged, ${byFate('failed').length} failed, ` +
          `${byFate('unknown').length} unknown; ${chaosEvents} chaos events; ` +
          `${gw.server.registry.stats.restarts} restarts`,
      );
      expect(byFate('acknowledged').length).toBeGreaterThan(0);
      expect(settingsSeen.filter((s) => s !== 'own')).toEqual([]);
      expect(gw.errorLogs).toEqual([]);
    } finally {
      await check.end();
    }
  }, 120_000);
});
