import { runBaselineRss } from './baseline-rss.js';
import { runIsolation } from './isolation.js';
import { runOpenCost } from './open-cost.js';
import { initPgbench, pgbenchPlan, runPgbenchRows, threadsFor } from './pgbench.js';
import { CLIENTS_PER_DB, runScale } from './scale.js';
import { benchTemplate } from './systems/gateway.js';
import {
  DEFAULT_SYSTEMS,
  databaseSource,
  SYSTEM_KINDS,
  type SystemKind,
  type SystemUnderTest,
  startSystem,
  unavailable,
} from './systems/index.js';
import { describeMachine, errorMessage, findTools, INSTALL_HINT, type Log, trackRunning } from './tools.js';
import { BENCHMARK_NAMES, type BenchOptions, type BenchResults } from './types.js';

/**
 * Runs the selected benchmarks against every system, one system at a time (so they never compete
 * for the cores; --quick runs them all at once), and returns everything measured. Never throws for a system that fails: that is
 * a result. Printing and writing files is run.ts's job.
 */

const defaultLog: Log = (message) => process.stderr.write(`${message}\n`);

export async function runBenchmarks(options: BenchOptions = {}): Promise<BenchResults> {
  const started = new Date();
  const quick = options.quick ?? false;
  const only = [...(options.only ?? BENCHMARK_NAMES)];
  const systems = [...(options.systems ?? DEFAULT_SYSTEMS)];
  const seconds = options.seconds ?? (quick ? 1 : 20);
  const log = options.log ?? defaultLog;
  const tools = findTools();
  for (const problem of tools.problems) log(`WARNING: ${problem}`);

  const results: BenchResults = {
    startedAt: started.toISOString(),
    finishedAt: '',
    durationSeconds: 0,
    options: { quick, only, seconds, systems },
    machine: describeMachine(tools),
    problems: [...tools.problems],
    systems: {},
    pgbench: [],
    openCost: [],
    rss: [],
    isolation: [],
    scale: [],
    baselineRss: [],
    errors: [],
  };
  if (results.machine.loadAverageAtStart > results.machine.cores / 2) {
    log(
      `WARNING: load average ${results.machine.loadAverageAtStart} on ${results.machine.cores} cores: ` +
        'other work on this machine will skew the numbers',
    );
  }
  const templateDir = await benchTemplate(options.templateDir);
  const longQuerySeconds = quick ? 1 : 10;

  const runSystem = async (kind: SystemKind): Promise<void> => {
    const skip = !tools.pgbench ? `pgbench missing (${INSTALL_HINT})` : unavailable(kind, tools);
    if (skip) {
      markAll(results, kind, only, seconds, quick, longQuerySeconds, 'not run', skip);
      return;
    }
    const pgbench = tools.pgbench as string;
    const t0 = performance.now();
    log(`== ${kind}`);
    let system: SystemUnderTest;
    try {
      system = await startSystem(kind, { tools, templateDir });
    } catch (err) {
      const error = `${kind} did not start: ${errorMessage(err)}`;
      log(error);
      results.errors.push(error);
      markAll(results, kind, only, seconds, quick, longQuerySeconds, 'failed', error);
      return;
    }
    results.systems[kind] = system.description;
    const untrack = trackRunning(() => system.stop());
    const database = databaseSource(system, (target) => initPgbench(pgbench, target));
    try {
      if (only.includes('pgbench')) {
        results.pgbench.push(...(await runPgbenchRows(system, { pgbench, database, seconds, quick, log })));
      }
      if (only.includes('scale')) {
        results.scale.push(await runScale(system, { pgbench, database, seconds, quick, log }));
      }
      if (only.includes('isolation')) {
        results.isolation.push(await runIsolation(system, { pgbench, database, longQuerySeconds, log }));
      }
    } finally {
      untrack();
      await system.stop().catch((err: unknown) => {
        results.errors.push(`${kind} did not stop cleanly: ${errorMessage(err)}`);
      });
      log(`== ${kind} done in ${Math.round((performance.now() - t0) / 1000)} s`);
    }
  };
  const runOpen = async (): Promise<void> => {
    const t0 = performance.now();
    const open = await runOpenCost({ quick, templateDir, tools, log });
    results.openCost = open.rows;
    results.rss = open.rss;
    results.errors.push(...open.errors);
    log(`== open cost done in ${Math.round((performance.now() - t0) / 1000)} s`);
  };

  const runBaseline = async (): Promise<void> => {
    const t0 = performance.now();
    const baseline = await runBaselineRss({ quick, templateDir, log });
    results.baselineRss = baseline.rows;
    results.errors.push(...baseline.errors);
    log(`== baseline RSS done in ${Math.round((performance.now() - t0) / 1000)} s`);
  };

  const perSystem = only.some((b) => b !== 'open' && b !== 'baseline-rss') ? systems : [];
  if (quick) {
    // Quick mode proves the harness works; its numbers mean nothing, so everything runs at once.
    await Promise.all([
      ...perSystem.map(runSystem),
      ...(only.includes('open') ? [runOpen()] : []),
      ...(only.includes('baseline-rss') ? [runBaseline()] : []),
    ]);
  } else {
    // Measurements run one at a time so systems never compete for the cores.
    for (const kind of perSystem) await runSystem(kind);
    if (only.includes('open')) await runOpen();
    if (only.includes('baseline-rss')) await runBaseline();
  }
  sortRows(results);

  const finished = new Date();
  results.finishedAt = finished.toISOString();
  results.durationSeconds = Math.round((finished.getTime() - started.getTime()) / 1000);
  return results;
}

/** Rows for a system that could not run, so every table still shows it. */
function markAll(
  results: BenchResults,
  system: SystemKind,
  only: readonly string[],
  seconds: number,
  quick: boolean,
  longQuerySeconds: number,
  status: 'not run' | 'failed',
  error: string,
): void {
  if (only.includes('pgbench')) {
    for (const item of pgbenchPlan(quick)) {
      results.pgbench.push({ system, ...item, threads: threadsFor(item.clients), seconds, status, error });
    }
  }
  if (only.includes('isolation')) results.isolation.push({ system, longQuerySeconds, status, error });
  if (only.includes('scale'))
    results.scale.push({ system, clientsPerDb: CLIENTS_PER_DB, seconds, status, error });
}

/** Rows in system order, whatever order (parallel in --quick) they finished in. */
function sortRows(results: BenchResults): void {
  const rank = (system: SystemKind) => SYSTEM_KINDS.indexOf(system);
  results.pgbench.sort((a, b) => rank(a.system) - rank(b.system));
  results.isolation.sort((a, b) => rank(a.system) - rank(b.system));
  results.scale.sort((a, b) => rank(a.system) - rank(b.system));
}
