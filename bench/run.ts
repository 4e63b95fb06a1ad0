import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { runBenchmarks } from './harness.js';
import { renderReport, writeBenchmarksMd, writeJson } from './report.js';
import { SYSTEM_KINDS, type SystemKind } from './systems/types.js';
import { stopEverything } from './tools.js';
import { BENCHMARK_NAMES, type BenchmarkName, type BenchResults } from './types.js';

/**
 * npm run bench -- [--quick] [--only pgbench,open,isolation,scale,baseline-rss] [--seconds N]
 *                  [--systems gateway,pglite-socket,postgres] [--write-md] [--from-json FILE]
 *
 * Prints markdown tables, writes bench/results/<timestamp>.json, and with --write-md rewrites
 * BENCHMARKS.md. Exits non-zero only when the harness itself breaks; systems that fail are results.
 */

const USAGE = `usage: npm run bench -- [options]
  --quick                a few seconds per benchmark, 20 transactions per pgbench client
                         (checks the harness; numbers are not meaningful)
  --only LIST            comma-separated subset of: ${BENCHMARK_NAMES.join(', ')}
  --seconds N            seconds per pgbench run (default 20; --quick counts transactions instead)
  --systems LIST         comma-separated subset of: ${SYSTEM_KINDS.join(', ')}
  --write-md             also rewrite BENCHMARKS.md with these results
  --from-json FILE       measure nothing: print (and with --write-md, write) a saved results file
  --help`;

function list<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  flag: string,
): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = items.filter((i) => !allowed.includes(i as T));
  if (bad.length > 0 || items.length === 0)
    throw new UsageError(`${flag}: unknown ${bad.join(', ') || '(empty)'}`);
  return items as T[];
}

class UsageError extends Error {}

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.help) {
    console.log(USAGE);
    return 0;
  }
  let results: BenchResults;
  if (parsed.fromJson) {
    // Re-render a saved run (e.g. after the report format changed) without measuring again.
    results = JSON.parse(await readFile(parsed.fromJson, 'utf8')) as BenchResults;
    console.log(`\n${renderReport(results)}`);
  } else {
    results = await runBenchmarks(parsed.options);
    console.log(`\n${renderReport(results)}`);
    console.error(`\nresults: ${await writeJson(results)}`);
  }
  if (parsed.writeMd) console.error(`updated ${await writeBenchmarksMd(results)}`);
  return 0;
}

function parse() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      seconds: { type: 'string' },
      systems: { type: 'string' },
      'write-md': { type: 'boolean', default: false },
      'from-json': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  let seconds: number | undefined;
  if (values.seconds !== undefined) {
    seconds = Number(values.seconds);
    if (!Number.isInteger(seconds) || seconds < 1)
      throw new UsageError('--seconds must be a positive integer');
  }
  const only = list<BenchmarkName>(values.only, BENCHMARK_NAMES, '--only');
  const systems = list<SystemKind>(values.systems, SYSTEM_KINDS, '--systems');
  return {
    help: values.help,
    fromJson: values['from-json'],
    writeMd: values['write-md'],
    options: {
      quick: values.quick,
      ...(only ? { only } : {}),
      ...(systems ? { systems } : {}),
      ...(seconds !== undefined ? { seconds } : {}),
    },
  };
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${sig}: stopping the systems under test (again to exit at once)`);
    void stopEverything().finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('benchmark harness failed:', err);
    process.exit(1);
  },
);
