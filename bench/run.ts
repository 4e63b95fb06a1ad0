import { appendFile, readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import {
  appendClusterReport,
  CLUSTER_BENCH,
  type ClusterBenchResults,
  renderClusterReport,
  runClusterBench,
} from './cluster-bench.js';
import {
  appendDurabilityReport,
  DURABILITY_BENCH,
  type DurabilityBenchResults,
  renderDurabilityReport,
  runDurabilityBench,
} from './durability-bench.js';
import { runBenchmarks } from './harness.js';
import { HTTP_BENCH, type HttpBenchResults, runHttpBench } from './http-bench.js';
import { appendHttpReport, renderHttpReport } from './http-report.js';
import {
  LOCAL_CACHE_BENCH,
  type LocalCacheResults,
  renderLocalCacheReport,
  runLocalCacheBench,
} from './local-cache.js';
import { renderReport, writeBenchmarksMd, writeJson } from './report.js';
import {
  appendRoundTripReport,
  ROUND_TRIP_BENCHES,
  type RoundTripResults,
  renderRoundTripBenches,
  runRoundTripBenches,
} from './round-trip-benches.js';
import { SYSTEM_KINDS, type SystemKind } from './systems/types.js';
import {
  appendTemplateReport,
  renderTemplateReport,
  runTemplateBench,
  TEMPLATE_BENCH,
  type TemplateBenchResults,
} from './template-bench.js';
import { stopEverything } from './tools.js';
import { BENCHMARK_NAMES, type BenchmarkName, type BenchResults } from './types.js';

/**
 * npm run bench -- [--quick] [--only pgbench,open,isolation,scale,baseline-rss,http] [--seconds N]
 *                  [--systems gateway,pglite-socket,postgres] [--write-md] [--from-json FILE]
 *
 * Prints markdown tables, writes bench/results/<timestamp>.json, and with --write-md rewrites
 * BENCHMARKS.md. Exits non-zero only when the harness itself breaks; systems that fail are results.
 */

const USAGE = `usage: npm run bench -- [options]
  --quick                a few seconds per benchmark, 20 transactions per pgbench client
                         (checks the harness; numbers are not meaningful)
  --only LIST            comma-separated subset of: ${BENCHMARK_NAMES.join(', ')}, ${HTTP_BENCH}, ${TEMPLATE_BENCH}, ${DURABILITY_BENCH}, ${LOCAL_CACHE_BENCH}, ${CLUSTER_BENCH}, ${ROUND_TRIP_BENCHES.join(', ')}
  --seconds N            seconds per pgbench run (default 20; --quick counts transactions instead)
  --mix-seconds N        seconds of the multi-tenant mix (default 60; --quick 3)
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
  // The HTTP front door's benchmark (bench/http-bench.ts) rides along in the same results file.
  let results: BenchResults & {
    http?: HttpBenchResults;
    templates?: TemplateBenchResults;
    durability?: DurabilityBenchResults;
    localCache?: LocalCacheResults;
    cluster?: ClusterBenchResults;
  } & RoundTripResults;
  if (parsed.fromJson) {
    // Re-render a saved run (e.g. after the report format changed) without measuring again.
    results = JSON.parse(await readFile(parsed.fromJson, 'utf8')) as typeof results;
  } else {
    results = await runBenchmarks(parsed.options);
    if (parsed.http) {
      const seconds = parsed.options.seconds ?? (parsed.options.quick ? 1 : 20);
      results.http = await runHttpBench({ seconds, log: (m) => console.error(m) });
    }
    if (parsed.templates) {
      const count = parsed.options.quick ? 20 : 200;
      results.templates = await runTemplateBench({ count, log: (m) => console.error(m) });
    }
    if (parsed.durability) {
      const seconds = parsed.options.seconds ?? (parsed.options.quick ? 1 : 20);
      results.durability = await runDurabilityBench({
        seconds,
        quick: parsed.options.quick,
        log: (m) => console.error(m),
      });
    }
    if (parsed.localCache) {
      const runs = parsed.options.quick ? 1 : 7;
      results.localCache = await runLocalCacheBench({ runs, log: (m) => console.error(m) });
    }
    if (parsed.cluster) {
      results.cluster = await runClusterBench({
        quick: parsed.options.quick,
        log: (m) => console.error(m),
      });
    }
    Object.assign(
      results,
      await runRoundTripBenches({
        selected: parsed.selected,
        quick: parsed.options.quick,
        mixSeconds: parsed.mixSeconds,
        log: (m) => console.error(m),
      }),
    );
  }
  console.log(`\n${renderReport(results)}`);
  if (results.http) console.log(`\n${renderHttpReport(results.http)}`);
  if (results.templates) console.log(`\n${renderTemplateReport(results.templates)}`);
  if (results.durability) console.log(`\n${renderDurabilityReport(results.durability)}`);
  if (results.localCache) console.log(`\n${renderLocalCacheReport(results.localCache)}`);
  if (results.cluster) console.log(`\n${renderClusterReport(results.cluster)}`);
  const roundTrip = renderRoundTripBenches(results);
  if (roundTrip) console.log(`\n${roundTrip}`);
  if (!parsed.fromJson) console.error(`\nresults: ${await writeJson(results)}`);
  if (parsed.writeMd) {
    const file = await writeBenchmarksMd(results);
    if (results.http) await appendHttpReport(file, results.http);
    if (results.templates) await appendTemplateReport(file, results.templates);
    if (results.durability) await appendDurabilityReport(file, results.durability);
    if (results.localCache) await appendFile(file, `\n${renderLocalCacheReport(results.localCache)}\n`);
    if (results.cluster) await appendClusterReport(file, results.cluster);
    await appendRoundTripReport(file, results);
    console.error(`updated ${file}`);
  }
  return 0;
}

function parse() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      seconds: { type: 'string' },
      'mix-seconds': { type: 'string' },
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
  const mixSeconds = values['mix-seconds'] === undefined ? undefined : Number(values['mix-seconds']);
  if (mixSeconds !== undefined && (!Number.isInteger(mixSeconds) || mixSeconds < 1))
    throw new UsageError('--mix-seconds must be a positive integer');
  const selected = list<string>(
    values.only,
    [
      ...BENCHMARK_NAMES,
      HTTP_BENCH,
      TEMPLATE_BENCH,
      DURABILITY_BENCH,
      LOCAL_CACHE_BENCH,
      CLUSTER_BENCH,
      ...ROUND_TRIP_BENCHES,
    ],
    '--only',
  );
  const only = selected?.filter((b): b is BenchmarkName =>
    (BENCHMARK_NAMES as readonly string[]).includes(b),
  );
  const systems = list<SystemKind>(values.systems, SYSTEM_KINDS, '--systems');
  return {
    help: values.help,
    fromJson: values['from-json'],
    writeMd: values['write-md'],
    http: selected === undefined || selected.includes(HTTP_BENCH),
    templates: selected === undefined || selected.includes(TEMPLATE_BENCH),
    durability: selected === undefined || selected.includes(DURABILITY_BENCH),
    localCache: selected === undefined || selected.includes(LOCAL_CACHE_BENCH),
    cluster: selected === undefined || selected.includes(CLUSTER_BENCH),
    selected,
    mixSeconds,
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
