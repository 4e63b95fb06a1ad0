import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BASELINE_RSS_DESCRIPTION, baselineRssTable } from './baseline-rss-report.js';
import { cell, num, ratio, statusText, table } from './markdown.js';
import { SYSTEM_KINDS, type SystemKind } from './systems/types.js';
import { projectRoot } from './tools.js';
import type { BenchResults, PgbenchRow, QueryMode, RssRow, Workload } from './types.js';

/** Markdown tables with ratios, the JSON results file, and BENCHMARKS.md. */

const WORKLOAD_TITLE: Record<Workload, string> = {
  tpcb: 'TPC-B (sort of), scale 1',
  'select-only': 'select-only (-S), scale 1',
};

function tpsCell(row: PgbenchRow | undefined): string {
  if (!row) return '—';
  if (row.status === 'ok') return num(row.tps);
  if (row.status === 'not run') return 'not run';
  return row.tps !== undefined ? `**failed** (${num(row.tps)} before abort)` : '**failed**';
}

function okTps(row: PgbenchRow | undefined): number | undefined {
  return row?.status === 'ok' ? row.tps : undefined;
}

function pgbenchTables(results: BenchResults): string {
  const out: string[] = [];
  const rows = results.pgbench;
  const find = (system: SystemKind, workload: Workload, mode: QueryMode, clients: number) =>
    rows.find(
      (r) => r.system === system && r.workload === workload && r.mode === mode && r.clients === clients,
    );
  for (const workload of ['tpcb', 'select-only'] as const) {
    const keys = new Map<string, { mode: QueryMode; clients: number }>();
    for (const r of rows.filter((r) => r.workload === workload)) {
      keys.set(`${r.mode}/${r.clients}`, { mode: r.mode, clients: r.clients });
    }
    if (keys.size === 0) continue;
    const seconds = rows.find((r) => r.workload === workload)?.seconds;
    out.push(`### pgbench ${WORKLOAD_TITLE[workload]}, -T ${seconds} s: TPS\n`);
    // The matched gateway (bench/systems/types.ts) gets its own columns when it ran.
    const matched = rows.some((r) => r.system === 'gateway-matched');
    out.push(
      table(
        [
          'mode',
          'clients',
          'gateway',
          ...(matched ? ['gateway, matched'] : []),
          'pglite-socket',
          'postgres',
          'gateway / pglite-socket',
          ...(matched ? ['matched / pglite-socket'] : []),
          'gateway / postgres',
        ],
        ['l', ...Array<'r'>(matched ? 8 : 6).fill('r')],
        [...keys.values()].map(({ mode, clients }) => {
          const g = find('gateway', workload, mode, clients);
          const m = find('gateway-matched', workload, mode, clients);
          const s = find('pglite-socket', workload, mode, clients);
          const p = find('postgres', workload, mode, clients);
          return [
            mode,
            String(clients),
            tpsCell(g),
            ...(matched ? [tpsCell(m)] : []),
            tpsCell(s),
            tpsCell(p),
            ratio(okTps(g), okTps(s)),
            ...(matched ? [ratio(okTps(m), okTps(s))] : []),
            ratio(okTps(g), okTps(p)),
          ];
        }),
      ),
    );
    out.push('');
  }
  if (rows.length > 0) {
    out.push('### pgbench details: latency and failures\n');
    const order = (r: PgbenchRow) =>
      SYSTEM_KINDS.indexOf(r.system) * 1000 +
      (r.workload === 'tpcb' ? 0 : 100) +
      ['simple', 'extended', 'prepared'].indexOf(r.mode) * 10 +
      r.clients;
    out.push(
      table(
        [
          'system',
          'workload',
          'mode',
          'clients',
          'TPS',
          'latency avg (ms)',
          'latency p99 (ms)',
          'transactions',
          'failed tx',
          'aborted clients',
          'other CPU (cores)',
          'status',
        ],
        ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
        [...rows]
          .sort((a, b) => order(a) - order(b))
          .map((r) => [
            r.system,
            r.workload,
            r.mode,
            String(r.clients),
            num(r.tps),
            num(r.latencyAvgMs, 2),
            num(r.latencyP99Ms, 2),
            num(r.transactions, 0),
            num(r.failedTransactions, 0),
            num(r.abortedClients, 0),
            num(r.otherCpuCores, 2),
            statusText(r.status, r.error),
          ]),
      ),
    );
    out.push('');
  }
  return out.join('\n');
}

function openCostTables(results: BenchResults): string {
  const out: string[] = [];
  if (results.openCost.length > 0) {
    out.push('### Open cost: time to first query\n');
    out.push(
      table(
        ['subject', 'case', 'the clock covers', 'n', 'p50 (ms)', 'p95 (ms)', 'other CPU (cores)', 'status'],
        ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'l'],
        results.openCost.map((r) => [
          r.subject,
          r.case,
          cell(r.measures),
          String(r.n),
          num(r.p50Ms, 1),
          num(r.p95Ms, 1),
          num(r.otherCpuCores, 2),
          statusText(r.status, r.error),
        ]),
      ),
    );
    const g = (kase: string) =>
      results.openCost.find((r) => r.subject === 'gateway' && r.case === kase && r.status === 'ok');
    const p = (kase: string) =>
      results.openCost.find((r) => r.subject === 'pglite' && r.case === kase && r.status === 'ok');
    const ratios = ['new database', 'existing closed database']
      .map((kase) => `${kase}: gateway / plain PGlite p50 = ${ratio(g(kase)?.p50Ms, p(kase)?.p50Ms)}`)
      .join('; ');
    out.push(`\n${ratios}.\n`);
  }
  if (results.rss.length > 0) {
    out.push('### Memory: RSS per open idle database\n');
    out.push(
      table(
        [
          'subject',
          'open idle databases',
          'RSS increase (MiB)',
          'per database (MiB)',
          'marginal per database (MiB)',
          'other CPU (cores)',
          'status',
        ],
        ['l', 'r', 'r', 'r', 'r', 'r', 'l'],
        results.rss.map((r, i) => [
          r.subject,
          String(r.open),
          num(r.rssDeltaMiB, 0),
          num(r.perDatabaseMiB, 1),
          num(r.marginalMiB ?? marginal(r, results.rss[i - 1]), 1),
          num(r.otherCpuCores, 2),
          statusText(r.status, r.error),
        ]),
      ),
    );
    out.push('');
  }
  return out.join('\n');
}

/** RSS per added database since the previous row of the same subject (for results files without it). */
function marginal(row: RssRow, previous: RssRow | undefined): number | undefined {
  if (row.rssDeltaMiB === undefined) return undefined;
  const prev = previous?.subject === row.subject ? previous : undefined;
  if (prev && prev.rssDeltaMiB === undefined) return undefined;
  return (row.rssDeltaMiB - (prev?.rssDeltaMiB ?? 0)) / (row.open - (prev?.open ?? 0));
}

function isolationTable(results: BenchResults): string {
  if (results.isolation.length === 0) return '';
  const seconds = results.isolation[0]?.longQuerySeconds;
  return [
    `### Isolation: \`select 1\` on database B while database A runs \`select pg_sleep(${seconds})\`\n`,
    'B gets `select 1` at a fixed rate (pgbench `-R 200`, one connection); latency counts from when each query was due.\n',
    table(
      [
        'system',
        'B queries due during A',
        'completed before A ended',
        'p50 (ms)',
        'p99 (ms)',
        'max (ms)',
        'B p50 before A (ms)',
        'other CPU (cores)',
        'status',
      ],
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      results.isolation.map((r) => [
        r.system,
        num(r.issuedDuring, 0),
        num(r.completedDuring, 0),
        num(r.p50Ms, 2),
        num(r.p99Ms, 2),
        num(r.maxMs, 2),
        num(r.baselineP50Ms, 3),
        num(r.otherCpuCores, 2),
        statusText(r.status, r.error),
      ]),
    ),
    '',
  ].join('\n');
}

function scaleTable(results: BenchResults): string {
  if (results.scale.length === 0) return '';
  const first = results.scale[0];
  return [
    `### Scale-out on cores: TPC-B -M simple, ${first?.clientsPerDb} clients per database, -T ${first?.seconds} s\n`,
    table(
      [
        'system',
        '1 busy database TPS',
        '2 busy databases TPS (sum)',
        'per database',
        '2 dbs / 1 db',
        'other CPU (cores)',
        'status',
      ],
      ['l', 'r', 'r', 'r', 'r', 'r', 'l'],
      results.scale.map((r) => [
        r.system,
        num(r.oneDbTps),
        num(r.twoDbTps),
        r.twoDbTpsEach ? r.twoDbTpsEach.map((v) => num(v)).join(' + ') : '—',
        r.ratio === undefined ? '—' : `${num(r.ratio, 2)}×`,
        num(r.otherCpuCores, 2),
        statusText(r.status, r.error),
      ]),
    ),
    '',
  ].join('\n');
}

export function renderMachine(results: BenchResults): string {
  const m = results.machine;
  return [
    `- CPU: ${m.cpuModel}, ${m.cores} cores; memory ${m.totalMemoryGiB} GiB; ${m.os}`,
    `- Node ${m.node}; PGlite ${m.pglite}; @electric-sql/pglite-socket ${m.pgliteSocket}`,
    `- ${m.pgbench}; ${m.postgres}`,
    `- pglite-gateway revision ${m.gitRevision}; 1-minute load average at start ${m.loadAverageAtStart}`,
    `- run ${results.startedAt} (${results.durationSeconds} s${results.options.quick ? ', --quick' : ''})`,
  ].join('\n');
}

/** All result tables, for stdout and BENCHMARKS.md. */
export function renderTables(results: BenchResults): string {
  const parts = [
    pgbenchTables(results),
    openCostTables(results),
    isolationTable(results),
    scaleTable(results),
    baselineRssTable(results.baselineRss),
  ];
  const problems = [...results.problems, ...results.errors];
  if (problems.length > 0) parts.push(`### Problems\n\n${problems.map((p) => `- ${cell(p)}`).join('\n')}\n`);
  return parts.filter((p) => p.length > 0).join('\n');
}

export function renderReport(results: BenchResults): string {
  const systems = SYSTEM_KINDS.filter((k) => results.systems[k]).map(
    (k) => `- **${k}**: ${results.systems[k]}`,
  );
  return [
    '## Machine\n',
    renderMachine(results),
    '',
    ...(systems.length > 0 ? ['## Systems\n', systems.join('\n'), ''] : []),
    '## Results\n',
    renderTables(results),
  ].join('\n');
}

/** Writes bench/results/<ISO timestamp>.json (ignored by git); returns its path. */
export async function writeJson(results: BenchResults, dir = path.join(projectRoot, 'bench', 'results')) {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${results.startedAt.replaceAll(':', '-')}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  return file;
}

const NOTES_START = '<!-- notes:start -->';
const NOTES_END = '<!-- notes:end -->';

const DEFAULT_NOTES = `${NOTES_START}
(Observations written by hand; \`npm run bench -- --write-md\` keeps this block and regenerates the rest.)
${NOTES_END}`;

/** Writes BENCHMARKS.md: prose, machine, how to rerun, tables. Keeps the hand-written notes block. */
export async function writeBenchmarksMd(
  results: BenchResults,
  file = path.join(projectRoot, 'BENCHMARKS.md'),
) {
  const existing = await readFile(file, 'utf8').catch(() => '');
  const start = existing.indexOf(NOTES_START);
  const end = existing.indexOf(NOTES_END);
  const notes = start >= 0 && end > start ? existing.slice(start, end + NOTES_END.length) : DEFAULT_NOTES;
  const text = `# Benchmarks

Numbers for this gateway measured the same way, in the same run, as the systems you would pick
instead: **pglite-socket** (the official PGlite server) and a native **PostgreSQL 15** as the
physical reference. Everything below was produced by \`npm run bench -- --write-md\`; rows where
the gateway loses are kept, and failures are shown as failures.

What differs between the systems, so the ratios can be read fairly:

- The gateway speaks TLS (\`sslmode=verify-full\`, SNI routing) and authenticates with SCRAM-SHA-256;
  pglite-socket and PostgreSQL are measured over plaintext TCP with no authentication (trust).
- PostgreSQL runs with fsync, synchronous_commit and full_page_writes on. PGlite never calls
  fsync itself: the gateway flushes each commit's WAL from outside (\`FSYNC=on\`, its default);
  pglite-socket never flushes, so its commits are cheaper and less durable.
- The gateway runs Postgres with 2 MiB of \`shared_buffers\` (\`SHARED_BUFFERS\`, memory per open
  database); pglite-socket with PGlite's 128 MB.
- \`--systems gateway-matched\` adds the gateway set up like pglite-socket (plaintext,
  \`FSYNC=off\`, 128 MiB of buffers; SCRAM stays): its ratio to pglite-socket is the gateway's own
  cost per round trip, apart from TLS, fsync and the smaller buffers.
- The gateway and pglite-socket are Node processes hosting PGlite (Postgres 18 compiled to WASM);
  PostgreSQL is native code with one process per connection.
- pgbench runs on the same machine, so it competes with the server for the cores; the gateway
  and pglite-socket run in the benchmark's Node process, idle while pgbench drives them.
- Ratios are gateway / other: above 1× the gateway is faster (TPS) or slower (open cost).
- "other CPU (cores)" is the average CPU that processes outside the benchmark used while a row was
  measured (from \`/proc\`). Near 0 means the row had the machine to itself; rows measured while
  something else ran are kept, and this column says so.

## How to rerun

\`\`\`sh
apt-get install -y postgresql-15       # pgbench and the PostgreSQL 15 server binaries
npm ci
npm run bench -- --write-md            # everything, 20 s pgbench runs (about 30 minutes); rewrites this file
npm run bench                          # the same without touching this file
npm run bench -- --quick               # a few seconds per benchmark: checks the harness
npm run bench -- --only pgbench,scale --seconds 10 --systems gateway,postgres
npm run bench -- --only baseline-rss   # a node's memory at rest (builds dist/; about 8 minutes)
npm run bench -- --from-json bench/results/<file>.json --write-md   # re-render a saved run
npm run bench:profile -- --interval-us 1000 --out breakdown.md      # one client's round trip, per stage
SHARED_BUFFERS=128MiB npm run bench -- --only pgbench   # the gateway with pglite-socket's buffer size
npm run bench -- --only pgbench --systems gateway,gateway-matched,pglite-socket   # also the gateway set up like pglite-socket
\`\`\`

Every run prints the tables and writes the raw results to \`bench/results/<timestamp>.json\`
(ignored by git). Nothing is installed at run time: when pgbench or the PostgreSQL binaries are
missing, their rows are reported as "not run" with the \`apt-get\` line that fixes it.
\`PG_BIN_DIR\` points at another PostgreSQL installation.

What each benchmark does (sources in \`bench/\`):

- **pgbench** (\`bench/pgbench.ts\`): \`pgbench -i -s 1\` once per system, then \`pgbench -n -T <s>\` at
  \`-c 1\` and \`-c 8\` (\`-j\` = min(clients, cores)) in \`-M simple\`, \`extended\` and \`prepared\`, TPC-B
  and \`-S\`. Latency average and p99 come from pgbench's per-transaction log (\`-l\`).
- **Open cost** (\`bench/open-cost.ts\`): in a fresh Node process per subject, time from connect to
  the first \`select 1\` result for databases never opened and for closed ones, over 20
  databases; then RSS growth with 1, 10 and 50 databases open and idle (after GC). "Marginal"
  is the growth since the previous count divided by the databases added: the cost of one more.
- **Isolation** (\`bench/isolation.ts\`): pgbench sends \`select 1\` to database B 200 times a second
  (\`-R 200\`, latency counted from when each query was due) while a client runs
  \`select pg_sleep(10)\` on database A; reported are B's queries due during A's query.
- **Scale** (\`bench/scale.ts\`): TPC-B with 4 clients on one database, then two pgbench
  processes with 4 clients each on two databases at once.
${BASELINE_RSS_DESCRIPTION}

## Notes

${notes}

${renderReport(results)}`;
  await writeFile(file, text.endsWith('\n') ? text : `${text}\n`);
  return file;
}
