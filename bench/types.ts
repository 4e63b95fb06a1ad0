import type { SystemKind } from './systems/types.js';
import type { Log, Machine } from './tools.js';

export const BENCHMARK_NAMES = ['pgbench', 'open', 'isolation', 'scale', 'baseline-rss'] as const;
export type BenchmarkName = (typeof BENCHMARK_NAMES)[number];

export type QueryMode = 'simple' | 'extended' | 'prepared';
/** pgbench's built-in TPC-B (sort of), or its select-only script (-S). */
export type Workload = 'tpcb' | 'select-only';
/** ok: measured; failed: ran and broke (the error says how); not run: could not run here. */
export type RowStatus = 'ok' | 'failed' | 'not run';

export interface BenchOptions {
  /** A few seconds per benchmark, fewer rows: proves the harness works. */
  quick?: boolean;
  /** Benchmarks to run (default all). */
  only?: readonly BenchmarkName[];
  /** Seconds per pgbench run (default 20, quick 1). */
  seconds?: number;
  /** Systems to measure (default all three). */
  systems?: readonly SystemKind[];
  /** PGlite template to copy (default: cached under the OS temp dir, built when missing). */
  templateDir?: string;
  /** Progress lines (default: stderr). */
  log?: Log;
}

export interface PgbenchRow {
  system: SystemKind;
  workload: Workload;
  mode: QueryMode;
  clients: number;
  threads: number;
  seconds: number;
  status: RowStatus;
  /** For failed and not-run rows: why. */
  error?: string;
  /** pgbench's tps (without initial connection time); for failed rows, what it printed before giving up. */
  tps?: number;
  latencyAvgMs?: number;
  latencyP99Ms?: number;
  /** Transactions processed. */
  transactions?: number;
  /** pgbench's "number of failed transactions". */
  failedTransactions?: number;
  /** Clients pgbench aborted after an error it does not retry. */
  abortedClients?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

export type OpenSubject = 'gateway' | 'pglite' | 'postgres';
export type OpenCase =
  | 'create'
  | 'new database'
  | 'existing closed database'
  | 'open database'
  | 'new database (initdb)';

export interface OpenCostRow {
  subject: OpenSubject;
  case: OpenCase;
  /** What exactly the clock covers. */
  measures: string;
  n: number;
  status: RowStatus;
  error?: string;
  p50Ms?: number;
  p95Ms?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

export interface RssRow {
  subject: 'gateway' | 'pglite';
  /** Databases open and idle when measured. */
  open: number;
  status: RowStatus;
  error?: string;
  /** Process RSS minus RSS with no database open. */
  rssDeltaMiB?: number;
  perDatabaseMiB?: number;
  /** RSS added per database since the previous (smaller) count: the cost of one more. */
  marginalMiB?: number;
  /** Databases the subject reported open when measured (the gateway's registry). */
  reallyOpen?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

/** A whole node's RSS with no database open (bench/baseline-rss.ts); sizes in MiB. */
export interface BaselineRssRow {
  /** Built JavaScript (`node dist/...`), TypeScript under tsx (`node --import tsx`), or bare node. */
  runtime: 'dist' | 'tsx' | 'node';
  /** WARM_ENGINES of the node (unset for bare node and the steps). */
  warmEngines?: number;
  /** A step of a start instead of `serve`: its modules loaded; and the embedded catalog opened. */
  stage?: 'modules' | 'catalog';
  status: RowStatus;
  error?: string;
  /** Nodes started; the sizes are medians. */
  repeats: number;
  /** Seconds between "listening" and the settled sample. */
  settleSeconds: number;
  /** From spawn to the "listening" log line. */
  startupSeconds?: number;
  /** VmRSS when "listening" was logged. */
  listeningMiB?: number;
  /** VmRSS `settleSeconds` later, and its anonymous and file-backed (+ shmem) parts. */
  settledMiB?: number;
  /** The smallest and largest settled VmRSS of the repeats. */
  settledMinMiB?: number;
  settledMaxMiB?: number;
  /** VmRSS after a full garbage collection of the main thread (SIGUSR2, see gc-on-signal.mjs). */
  afterGcMiB?: number;
  anonMiB?: number;
  fileMiB?: number;
  /** RSS of the node's child processes (tsx's esbuild service), not included above. */
  childrenMiB?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

export interface IsolationRow {
  system: SystemKind;
  /** Seconds database A spends in `select pg_sleep(N)`. */
  longQuerySeconds: number;
  status: RowStatus;
  error?: string;
  /** B's `select 1` queries due (pgbench -R schedule) while A's query ran. */
  issuedDuring?: number;
  /** Of those, how many completed before A's query ended. */
  completedDuring?: number;
  /** Latency of the queries due during A, from when each was due. */
  p50Ms?: number;
  p99Ms?: number;
  maxMs?: number;
  /** B's latency before A's query started. */
  baselineP50Ms?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

export interface ScaleRow {
  system: SystemKind;
  clientsPerDb: number;
  seconds: number;
  status: RowStatus;
  error?: string;
  oneDbTps?: number;
  /** Sum over both databases, both pgbench processes running at the same time. */
  twoDbTps?: number;
  twoDbTpsEach?: number[];
  /** twoDbTps / oneDbTps. */
  ratio?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

export interface BenchResults {
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  options: {
    quick: boolean;
    only: BenchmarkName[];
    seconds: number;
    systems: SystemKind[];
  };
  machine: Machine;
  /** Missing tools and similar, each with the command that fixes it. */
  problems: string[];
  /** How each system was run. */
  systems: Partial<Record<SystemKind, string>>;
  pgbench: PgbenchRow[];
  openCost: OpenCostRow[];
  rss: RssRow[];
  isolation: IsolationRow[];
  scale: ScaleRow[];
  /** Absent in results files written before the baseline-rss benchmark existed. */
  baselineRss?: BaselineRssRow[];
  /** Failures of the harness's own steps (a system that did not start, a crashed child). */
  errors: string[];
}

/** Input of bench/open-cost-child.ts (JSON in BENCH_OPEN_COST). */
export interface OpenCostChildInput {
  subject: 'gateway' | 'pglite';
  /** Databases timed per case. */
  count: number;
  /** Cumulative numbers of open idle databases at which RSS is measured. */
  rssCounts: number[];
  /** PGlite-only: new databases made by PGlite's own initdb (no template). */
  initdbCount: number;
  templateDir: string;
}

export interface OpenCostChildOutput {
  rows: OpenCostRow[];
  rss: RssRow[];
}

/** The child's stdout line carrying its JSON output. */
export const RESULT_PREFIX = 'RESULT ';
