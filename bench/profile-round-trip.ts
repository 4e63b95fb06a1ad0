import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import type { Profiler } from 'node:inspector';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { num } from './markdown.js';
import { initPgbench } from './pgbench.js';
import { type PgbenchRun, runPgbench } from './pgbench-runner.js';
import {
  type CpuPerThread,
  renderBreakdown,
  type SystemName,
  type SystemResult,
  type ThreadTimes,
} from './profile-report.js';
import { breakdown } from './profile-stages.js';
import { startGateway } from './systems/gateway.js';
import { startPgliteSocket } from './systems/pglite-socket.js';
import type { SystemUnderTest, Target } from './systems/types.js';
import { cpuSnapshot, errorMessage, findTools, otherCpuCores, sleep } from './tools.js';

/**
 * Issue 17: where one client's round trip goes. For each system (the gateway; pglite-socket) it
 * starts the system in this process, runs `pgbench -n -S -M simple -c 1 -T <s>` against it
 * (--script, --mode and --clients change that) while V8's sampling profiler runs in the main thread and, through the inspector's NodeWorker domain,
 * in the database's engine worker, then sorts each sample's self time into a stage (by the
 * nearest frame on its stack that belongs to a known component) and divides by the transactions
 * pgbench reported: µs per round trip per stage. Per-thread CPU comes from /proc (schedstat), not
 * from the profile: a profile is wall time, and a thread blocked in Atomics.wait is sampled in the
 * frame that called it. Which stage a frame belongs to is decided in profile-stages.ts; the tables
 * are drawn in profile-report.ts.
 *
 *   npx tsx bench/profile-round-trip.ts [--seconds 10] [--warmup 3] [--interval-us 250]
 *     [--systems gateway,pglite-socket] [--matched] [--script tpcb] [--mode extended]
 *     [--clients 8] [--out breakdown.md] [--profiles dir]
 *
 * --profiles writes the raw .cpuprofile files (open them in Chrome DevTools).
 */

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    'interval-us': { type: 'string', default: '250' },
    systems: { type: 'string', default: 'gateway,pglite-socket' },
    /** Extra gateway settings, e.g. SHARED_BUFFERS=128MiB,FSYNC=off. */
    'gateway-env': { type: 'string', default: '' },
    /** The gateway set up like pglite-socket (plaintext, FSYNC=off, 128 MiB; systems/gateway.ts). */
    matched: { type: 'boolean', default: false },
    /** pgbench's built-in script: select-only (-S, one round trip) or tpcb (seven). */
    script: { type: 'string', default: 'select-only' },
    /** pgbench -M: simple, extended or prepared. */
    mode: { type: 'string', default: 'simple' },
    /** pgbench -c (with -j = min(clients, 2)): the stages are then per transaction of all clients. */
    clients: { type: 'string', default: '1' },
    out: { type: 'string' },
    profiles: { type: 'string' },
  },
});
const SECONDS = Number(args.seconds);
const WARMUP = Number(args.warmup);
const INTERVAL_US = Number(args['interval-us']);
const SCRIPT = args.script === 'tpcb' ? 'tpcb' : 'select-only';
const MODE = ['simple', 'extended', 'prepared'].includes(args.mode ?? '') ? (args.mode as string) : 'simple';
const CLIENTS = Math.max(1, Math.floor(Number(args.clients)) || 1);
const SYSTEMS = (args.systems ?? '').split(',').filter(Boolean) as SystemName[];
const GATEWAY_ENV = Object.fromEntries(
  (args['gateway-env'] ?? '')
    .split(',')
    .filter(Boolean)
    .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
);
const log = (line: string) => process.stderr.write(`[profile] ${line}\n`);

// ---------------------------------------------------------------------------------------------
// Profilers: this thread's, and the engine workers' through NodeWorker

const session = new Session();
session.connect();

const workerSessions = new Set<string>();
const workerCalls = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
let nextCall = 1;
session.on('NodeWorker.attachedToWorker', (m) => {
  workerSessions.add(m.params.sessionId);
});
session.on('NodeWorker.detachedFromWorker', (m) => {
  workerSessions.delete(m.params.sessionId);
});
session.on('NodeWorker.receivedMessageFromWorker', (m) => {
  const msg = JSON.parse(m.params.message) as { id?: number; result?: unknown; error?: { message: string } };
  const call = msg.id === undefined ? undefined : workerCalls.get(msg.id);
  if (!call || msg.id === undefined) return;
  workerCalls.delete(msg.id);
  if (msg.error) call.reject(new Error(msg.error.message));
  else call.resolve(msg.result);
});

function workerCall(sessionId: string, method: string, params: object = {}): Promise<unknown> {
  const id = nextCall++;
  const reply = new Promise<unknown>((resolve, reject) => workerCalls.set(id, { resolve, reject }));
  void session
    .post('NodeWorker.sendMessageToWorker', { sessionId, message: JSON.stringify({ id, method, params }) })
    .catch((err: unknown) => workerCalls.get(id)?.reject(new Error(errorMessage(err))));
  return reply;
}

async function startWorkerProfiler(sessionId: string): Promise<void> {
  await workerCall(sessionId, 'Profiler.enable');
  await workerCall(sessionId, 'Profiler.setSamplingInterval', { interval: INTERVAL_US });
  await workerCall(sessionId, 'Profiler.start');
}

async function stopWorkerProfiler(sessionId: string): Promise<Profiler.Profile> {
  const r = (await workerCall(sessionId, 'Profiler.stop')) as { profile: Profiler.Profile };
  await workerCall(sessionId, 'Profiler.disable');
  return r.profile;
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

// ---------------------------------------------------------------------------------------------
// CPU per thread (/proc)

/** Each thread's on-CPU and run-queue (runnable, not running) ns: schedstat's first two fields. */
function threadSched(): Map<number, { cpu: number; queued: number }> {
  const out = new Map<number, { cpu: number; queued: number }>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const [cpu, queued] = readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
      out.set(Number(tid), { cpu: cpu ?? 0, queued: queued ?? 0 });
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** CPU µs of the children this process has reaped (pgbench), from /proc/self/stat (CLK_TCK 100). */
function reapedChildrenCpuUs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10_000;
}

type Sched = ReturnType<typeof threadSched>;

/** `known`: the threads that ran before the profilers started (the rest are theirs). */
function cpuDelta(before: Sched, after: Sched, pgbenchUs: number, known: Set<number>): CpuPerThread {
  const deltas: (ThreadTimes & { tid: number })[] = [];
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { cpu: 0, queued: 0 };
    deltas.push({ tid, cpuUs: (a.cpu - b.cpu) / 1000, queuedUs: (a.queued - b.queued) / 1000 });
  }
  const none = { cpuUs: 0, queuedUs: 0 };
  const main = deltas.find((d) => d.tid === process.pid) ?? none;
  const others = deltas
    .filter((d) => d.tid !== process.pid && known.has(d.tid))
    .sort((a, b) => b.cpuUs - a.cpuUs);
  const rest = others.slice(1).reduce((sum, d) => sum + d.cpuUs, 0);
  const profilers = deltas.filter((d) => !known.has(d.tid)).reduce((sum, d) => sum + d.cpuUs, 0);
  return { main, busiestOther: others[0] ?? none, restUs: rest, profilerUs: profilers, pgbenchUs };
}

// ---------------------------------------------------------------------------------------------
// One system

function pgbenchArgs(target: Target, seconds: number, progress: boolean): string[] {
  return [
    '-n',
    ...(SCRIPT === 'tpcb' ? [] : ['-S']),
    ...['-M', MODE],
    ...['-c', String(CLIENTS), '-j', String(Math.min(CLIENTS, 2))],
    ...['-T', String(seconds)],
    ...(progress ? ['-P', '1'] : []),
    target.conninfo,
  ];
}

/** Mean of pgbench's `-P 1` progress TPS after the first second (the JIT's), before the probe. */
function progressTps(run: PgbenchRun, untilSecond: number): number | undefined {
  const tps: number[] = [];
  for (const m of run.stderr.matchAll(/^progress: ([\d.]+) s, ([\d.]+) tps/gm)) {
    const at = Number(m[1]);
    if (at > 1.5 && at <= untilSecond + 0.5) tps.push(Number(m[2]));
  }
  return tps.length ? tps.reduce((a, b) => a + b, 0) / tps.length : undefined;
}

async function profileSystem(name: SystemName, pgbench: string): Promise<SystemResult> {
  log(`${name}: starting`);
  const system: SystemUnderTest =
    name === 'gateway'
      ? await startGateway({ env: GATEWAY_ENV, matched: args.matched })
      : await startPgliteSocket();
  try {
    const target = await system.createDatabase('profile');
    log(`${name}: pgbench -i -s 1`);
    await initPgbench(pgbench, target);

    // Warm-up (JIT), unprofiled except its last second, which finds the database's engine worker:
    // the one of the pool whose profile holds the most WASM.
    log(`${name}: warm-up ${WARMUP} s`);
    const warm = runPgbench(pgbench, pgbenchArgs(target, WARMUP, true), {
      env: target.env,
      timeoutMs: (WARMUP + 60) * 1000,
    });
    let engineWorker: string | undefined;
    let workersSeen = 0;
    if (name === 'gateway') {
      await sleep(Math.max(0, WARMUP - 1) * 1000);
      await session.post('NodeWorker.enable', { waitForDebuggerOnStart: false });
      await sleep(100);
      const ids = [...workerSessions];
      workersSeen = ids.length;
      await Promise.all(ids.map(startWorkerProfiler));
      await sleep(500);
      let best = -1;
      for (const id of ids) {
        const p = await stopWorkerProfiler(id);
        const b = breakdown(p, 0, Number.POSITIVE_INFINITY, 'worker');
        const busy = (['wasm', 'pgliteJs', 'fs'] as const).reduce(
          (sum, k) => sum + (b.stages.get(k) ?? 0),
          0,
        );
        if (busy > best) {
          best = busy;
          engineWorker = id;
        }
      }
    }
    const warmRun = await warm;
    if (warmRun.code !== 0) throw new Error(`warm-up pgbench failed: ${warmRun.error ?? warmRun.stderr}`);
    const warmupTps = progressTps(warmRun, WARMUP - 1);

    // The measured run.
    log(`${name}: profiled run ${SECONDS} s (engine worker ${engineWorker ? 'found' : 'none'})`);
    const known = new Set(threadSched().keys());
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: INTERVAL_US });
    if (engineWorker) await startWorkerProfiler(engineWorker);
    const profilingFrom = nowUs();
    await session.post('Profiler.start');
    const cpuBefore = threadSched();
    const childBefore = reapedChildrenCpuUs();
    const machineBefore = cpuSnapshot();
    const from = nowUs();
    const run = await runPgbench(pgbench, pgbenchArgs(target, SECONDS, false), {
      env: target.env,
      timeoutMs: (SECONDS + 60) * 1000,
    });
    const to = nowUs();
    const otherCores = otherCpuCores(machineBefore, cpuSnapshot());
    const cpu = cpuDelta(cpuBefore, threadSched(), reapedChildrenCpuUs() - childBefore, known);
    const { profile: mainProfile } = await session.post('Profiler.stop');
    await session.post('Profiler.disable');
    const workerProfile = engineWorker ? await stopWorkerProfiler(engineWorker) : undefined;
    if (name === 'gateway') await session.post('NodeWorker.disable');
    if (run.code !== 0 || !run.processed || !run.tps)
      throw new Error(`pgbench failed: ${run.error ?? run.stderr}`);

    // V8's profile clock is the monotonic clock process.hrtime reads; if it is not, keep every sample.
    const clockAligned = Math.abs(mainProfile.startTime - profilingFrom) < 200_000;
    const [lo, hi] = clockAligned ? [from, to] : [0, Number.POSITIVE_INFINITY];
    const threads: SystemResult['threads'] = { main: breakdown(mainProfile, lo, hi, 'main') };
    if (workerProfile) threads.worker = breakdown(workerProfile, lo, hi, 'worker');
    if (args.profiles) {
      await mkdir(args.profiles, { recursive: true });
      await writeFile(path.join(args.profiles, `${name}-main.cpuprofile`), JSON.stringify(mainProfile));
      if (workerProfile)
        await writeFile(path.join(args.profiles, `${name}-worker.cpuprofile`), JSON.stringify(workerProfile));
    }
    log(`${name}: ${run.processed} transactions, ${num(run.tps, 0)} TPS (warm-up ${num(warmupTps, 0)})`);
    return {
      system: name,
      tps: run.tps,
      warmupTps,
      transactions: run.processed,
      windowUs: to - from,
      threads,
      cpu,
      workersSeen,
      clockAligned,
      otherCores,
    };
  } finally {
    await system.stop();
  }
}

// ---------------------------------------------------------------------------------------------

const tools = findTools();
if (!tools.pgbench) throw new Error('pgbench not found on PATH');
const started = new Date().toISOString().slice(0, 16).replace('T', ' ');
const results: SystemResult[] = [];
for (const name of SYSTEMS) {
  if (name !== 'gateway' && name !== 'pglite-socket') throw new Error(`unknown system ${name}`);
  results.push(await profileSystem(name, tools.pgbench));
  await sleep(1000);
}
session.disconnect();
const text = renderBreakdown(results, {
  started,
  seconds: SECONDS,
  intervalUs: INTERVAL_US,
  gatewayEnv: [
    args.matched ? 'matched (plaintext, FSYNC=off, SHARED_BUFFERS=128MiB)' : '',
    args['gateway-env'],
  ]
    .filter(Boolean)
    .join(', '),
  script: SCRIPT,
  mode: MODE,
  clients: CLIENTS,
});
if (args.out) await writeFile(args.out, `${text}\n`);
console.log(text);
