import { cell, num, table } from './markdown.js';
import {
  isWait,
  type NodeStage,
  STAGES,
  type StageId,
  type ThreadBreakdown,
  type ThreadName,
} from './profile-stages.js';

/**
 * The round-trip breakdown's markdown: µs per transaction by stage for the gateway (main thread,
 * engine worker, both) beside pglite-socket, the CPU per thread from /proc, and each system's
 * functions with the most self time. Also what one system's profiled run yields, the report's
 * input, so the run (profile-round-trip.ts) and the tables agree on it in one place.
 */

export type SystemName = 'gateway' | 'pglite-socket';

export interface ThreadTimes {
  cpuUs: number;
  queuedUs: number;
}

export interface CpuPerThread {
  main: ThreadTimes;
  /** The busiest other thread: the engine worker in the gateway. */
  busiestOther: ThreadTimes;
  restUs: number;
  /** Threads started with the profilers (V8's sampler and its event processor). */
  profilerUs: number;
  pgbenchUs: number;
}

export interface SystemResult {
  system: SystemName;
  tps: number;
  warmupTps: number | undefined;
  transactions: number;
  windowUs: number;
  threads: Partial<Record<ThreadName, ThreadBreakdown>>;
  cpu: CpuPerThread;
  workersSeen: number;
  clockAligned: boolean;
  /** Cores other processes of the machine used during the profiled run. */
  otherCores: number | undefined;
}

/** How the run was made, for the report's heading. */
interface RunSettings {
  started: string;
  seconds: number;
  intervalUs: number;
  /** --matched and --gateway-env as given. */
  gatewayEnv: string | undefined;
  /** pgbench's built-in script. */
  script: 'select-only' | 'tpcb';
  /** pgbench -M and -c. */
  mode: string;
  clients: number;
}

function perTx(r: SystemResult | undefined, us: number | undefined): number | undefined {
  return r && us !== undefined ? us / r.transactions : undefined;
}

function stageUs(
  r: SystemResult | undefined,
  thread: ThreadName | 'all',
  stage: StageId,
): number | undefined {
  if (!r) return undefined;
  const threads: ThreadName[] = thread === 'all' ? ['main', 'worker'] : [thread];
  let sum = 0;
  let any = false;
  for (const t of threads) {
    const b = r.threads[t];
    if (!b) continue;
    any = true;
    sum += b.stages.get(stage) ?? 0;
  }
  return any ? perTx(r, sum) : undefined;
}

const us1 = (v: number | undefined) => num(v, 1);

export function renderBreakdown(results: SystemResult[], run: RunSettings): string {
  const gw = results.find((r) => r.system === 'gateway');
  const ps = results.find((r) => r.system === 'pglite-socket');
  const out: string[] = [];
  out.push(
    `### ${run.clients === 1 ? "One client's" : `${run.clients} clients:`} ${run.script === 'tpcb' ? 'TPC-B transaction (7 round trips)' : 'round trip'}, per stage (pgbench -n ${run.script === 'tpcb' ? '' : '-S '}-M ${run.mode} -c ${run.clients} -T ${run.seconds}, ${run.started})`,
    '',
    `Self time of V8 CPU-profile samples (every ${run.intervalUs} µs) taken while pgbench ran, by stage, ` +
      `divided by the transactions pgbench reported: µs per transaction${run.script === 'tpcb' ? '' : ' (one round trip)'}. A profile ` +
      'is wall time: the "wait" rows are where a thread was blocked or spinning, not CPU.' +
      (run.gatewayEnv ? ` Gateway settings: ${run.gatewayEnv}.` : ''),
    '',
  );
  const rows: string[][] = [];
  for (const s of STAGES) {
    const cols = [
      stageUs(gw, 'main', s.id),
      stageUs(gw, 'worker', s.id),
      stageUs(gw, 'all', s.id),
      stageUs(ps, 'main', s.id),
    ];
    if (cols.every((v) => v === undefined || v < 0.05)) continue;
    const diff = cols[2] !== undefined && cols[3] !== undefined ? cols[2] - cols[3] : undefined;
    rows.push([cell(s.label), ...cols.map(us1), us1(diff)]);
  }
  const cpuSum = (r: SystemResult | undefined, thread: ThreadName | 'all') => {
    if (!r) return undefined;
    let sum = 0;
    for (const s of STAGES) if (!isWait(s.id)) sum += stageUs(r, thread, s.id) ?? 0;
    return sum;
  };
  const totalSum = (r: SystemResult | undefined, thread: ThreadName | 'all') => {
    if (!r) return undefined;
    let sum = 0;
    for (const s of STAGES) sum += stageUs(r, thread, s.id) ?? 0;
    return sum;
  };
  const sumRow = (label: string, f: typeof cpuSum) => {
    const cols = [
      f(gw, 'main'),
      gw?.threads.worker ? f(gw, 'worker') : undefined,
      f(gw, 'all'),
      f(ps, 'main'),
    ];
    const diff = cols[2] !== undefined && cols[3] !== undefined ? cols[2] - cols[3] : undefined;
    return [`**${label}**`, ...cols.map(us1), us1(diff)];
  };
  rows.push(sumRow('sum without the wait rows', cpuSum), sumRow('sum of all rows (≈ wall)', totalSum));
  out.push(
    table(
      [
        'stage',
        'gateway main µs',
        'gateway worker µs',
        'gateway µs',
        'pglite-socket µs (main)',
        'gateway − pglite-socket',
      ],
      ['l', 'r', 'r', 'r', 'r', 'r'],
      rows,
    ),
    '',
  );

  const wall = (r: SystemResult | undefined) => (r ? 1e6 / r.tps : undefined);
  const cpuRow = (label: string, f: (r: SystemResult) => number) => [
    label,
    us1(gw ? perTx(gw, f(gw)) : undefined),
    us1(ps ? perTx(ps, f(ps)) : undefined),
  ];
  out.push(
    table(
      ['per transaction', 'gateway', 'pglite-socket'],
      ['l', 'r', 'r'],
      [
        ['TPS, profiled run', num(gw?.tps, 0), num(ps?.tps, 0)],
        ['TPS, warm-up before profiling (pgbench -P 1)', num(gw?.warmupTps, 0), num(ps?.warmupTps, 0)],
        ['wall µs (1e6 / TPS)', us1(wall(gw)), us1(wall(ps))],
        cpuRow('CPU µs, main thread (/proc schedstat)', (r) => r.cpu.main.cpuUs),
        cpuRow('CPU µs, busiest other thread (gateway: the engine worker)', (r) => r.cpu.busiestOther.cpuUs),
        cpuRow(
          'CPU µs, all other threads of the process (V8 helpers, libuv, idle workers)',
          (r) => r.cpu.restUs,
        ),
        cpuRow('CPU µs, threads the profilers started', (r) => r.cpu.profilerUs),
        cpuRow('CPU µs, pgbench (the client)', (r) => r.cpu.pgbenchUs),
        cpuRow(
          "CPU µs, whole server process (without the profilers' threads)",
          (r) => r.cpu.main.cpuUs + r.cpu.busiestOther.cpuUs + r.cpu.restUs,
        ),
        cpuRow('run-queue wait µs, main thread (runnable, no core free)', (r) => r.cpu.main.queuedUs),
        cpuRow('run-queue wait µs, busiest other thread', (r) => r.cpu.busiestOther.queuedUs),
        ['transactions', num(gw?.transactions, 0), num(ps?.transactions, 0)],
        ['cores used by other processes meanwhile', num(gw?.otherCores, 2), num(ps?.otherCores, 2)],
      ],
    ),
    '',
  );

  for (const r of results) {
    const entries: { key: string; thread: ThreadName; us: number; stage: NodeStage }[] = [];
    for (const thread of ['main', 'worker'] as const) {
      for (const [key, v] of r.threads[thread]?.functions ?? []) entries.push({ key, thread, ...v });
    }
    entries.sort((a, b) => b.us - a.us);
    out.push(
      `Top self time, ${r.system}:`,
      '',
      table(
        ['function (file:line)', 'thread', 'stage', 'µs / tx'],
        ['l', 'l', 'l', 'r'],
        entries.slice(0, 15).map((e) => [cell(`\`${e.key}\``), e.thread, e.stage, us1(perTx(r, e.us))]),
      ),
      '',
    );
  }
  const notes: string[] = [];
  for (const r of results) {
    notes.push(
      `${r.system}: ${r.threads.main?.samples ?? 0} main-thread samples` +
        (r.threads.worker ? `, ${r.threads.worker.samples} engine-worker samples` : '') +
        (r.system === 'gateway'
          ? ` (${r.workersSeen} workers in the process, only the database's profiled)`
          : '') +
        (r.clockAligned ? '' : '; profile clock not aligned: all samples kept'),
    );
  }
  out.push(`Samples: ${notes.join('; ')}.`);
  return out.join('\n');
}
