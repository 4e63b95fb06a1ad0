import pg from 'pg';
import { type Findings, sleep } from './bookkeeping.js';

/** The well-behaved client: counter increments whose commits are counted, then verified. */

export const FUZZ_SCHEMA = `
  create table counter (n int not null);
  insert into counter values (0);
  create table commits (id text primary key);
  create table fuzz_t (id int, v text);
  insert into fuzz_t values (0, 'seed');
`;

/**
 * What an error the counter client got says about the fuzz, when it is not a legitimate outcome
 * of fuzzing (queue timeouts, restarts and lost connections are): a role, search_path,
 * read-only default, statement timeout or aborted transaction left on the shared session by
 * another client, a session another client broke, or an internal error.
 */
function counterErrorProblem(err: { code?: string; message?: string }): string | undefined {
  const code = err.code ?? '';
  if (code.startsWith('XX')) return 'an internal error';
  // Its statements are harmless: a broken engine it meets was broken by another client.
  if (code === '58000') return "another client's damage to the shared session reached it";
  if (['42501', '42P01', '25006', '25P02', '25001'].includes(code)) {
    return "another client's session state leaked into it";
  }
  if (code === '57014' && /statement timeout/i.test(err.message ?? '')) {
    return "another client's statement_timeout leaked into it";
  }
  return undefined;
}

export interface CounterReport {
  acknowledged: number;
  inDoubt: number;
  inDoubtCommitted: number;
  counter: number;
  committedRows: number;
  errorsByCode: Record<string, number>;
  ok: boolean;
  problems: string[];
}

export class CounterClient {
  private readonly acked: string[] = [];
  private readonly inDoubt: string[] = [];
  private readonly errors = new Map<string, number>();
  private stopped = false;
  private loop: Promise<void> | undefined;
  private seq = 0;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly findings: Findings,
    private readonly tag = `c${Date.now().toString(36)}`,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  private count(key: string) {
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  private async run(): Promise<void> {
    let client: pg.Client | undefined;
    while (!this.stopped) {
      if (!client) {
        const c = new pg.Client({ ...this.config, query_timeout: 60_000, connectionTimeoutMillis: 20_000 });
        c.on('error', () => undefined);
        try {
          await c.connect();
          client = c;
        } catch (err) {
          this.count(`connect ${(err as { code?: string }).code ?? 'failed'}`);
          await c.end().catch(() => undefined);
          await sleep(200);
          continue;
        }
      }
      const id = `${this.tag}-${this.seq++}`;
      let phase = 'begin';
      try {
        await client.query('begin');
        phase = 'work';
        await client.query('update counter set n = n + 1');
        await client.query('insert into commits (id) values ($1)', [id]);
        phase = 'commit';
        const result = await client.query('commit');
        if (result.command === 'COMMIT') this.acked.push(id);
        else this.findings.violation(`counter client: COMMIT answered ${result.command}`, id);
      } catch (err) {
        const e = err as { code?: string; message?: string; severity?: string };
        this.count(e.code ?? 'connection');
        const problem = counterErrorProblem(e);
        if (problem) {
          this.findings.violation(
            `counter client got ${e.code} "${e.message}": ${problem}`,
            `transaction ${id}, phase ${phase}; latest fuzz runs started: ${this.findings.recentRuns(3000)}`,
          );
        }
        // Whether a COMMIT that failed this way took effect is decided at the end from `commits`.
        if (phase === 'commit') this.inDoubt.push(id);
        if (!e.code || e.severity === 'FATAL' || e.code.startsWith('08') || e.code.startsWith('57')) {
          await client.end().catch(() => undefined);
          client = undefined;
        } else {
          await client.query('rollback').catch(async () => {
            await client?.end().catch(() => undefined);
            client = undefined;
          });
        }
      }
      await sleep(Math.floor(Math.random() * 20));
    }
    await client?.end().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** Compares the table with the acknowledged commits (call after stop). */
  async verify(): Promise<CounterReport> {
    const problems: string[] = [];
    const client = new pg.Client({ ...this.config, query_timeout: 60_000, connectionTimeoutMillis: 20_000 });
    client.on('error', () => undefined);
    let counter = -1;
    let rows: string[] = [];
    try {
      await client.connect();
      counter = Number((await client.query('select n from counter')).rows[0]?.n);
      rows = (await client.query<{ id: string }>('select id from commits')).rows.map((r) => r.id);
    } finally {
      await client.end().catch(() => undefined);
    }
    const committed = new Set(rows);
    const acked = new Set(this.acked);
    const doubtful = new Set(this.inDoubt);
    const lost = this.acked.filter((id) => !committed.has(id));
    const phantom = rows.filter((id) => id.startsWith(this.tag) && !acked.has(id) && !doubtful.has(id));
    const inDoubtCommitted = this.inDoubt.filter((id) => committed.has(id)).length;
    if (counter !== rows.length) problems.push(`counter is ${counter} but ${rows.length} commit rows exist`);
    if (lost.length > 0) problems.push(`${lost.length} acknowledged commits are missing (e.g. ${lost[0]})`);
    if (phantom.length > 0)
      problems.push(`${phantom.length} commits that failed took effect (e.g. ${phantom[0]})`);
    if (counter !== this.acked.length + inDoubtCommitted) {
      problems.push(
        `counter ${counter} != acknowledged ${this.acked.length} + in-doubt committed ${inDoubtCommitted}`,
      );
    }
    return {
      acknowledged: this.acked.length,
      inDoubt: this.inDoubt.length,
      inDoubtCommitted,
      counter,
      committedRows: rows.length,
      errorsByCode: Object.fromEntries(this.errors),
      ok: problems.length === 0,
      problems,
    };
  }
}
