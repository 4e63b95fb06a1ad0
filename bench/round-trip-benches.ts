import { appendFile } from 'node:fs/promises';
import { ENGINE_BENCH, type EngineHopResults, renderEngineHop, runEngineHop } from './engine-hop.js';
import { MIX_BENCH, type MixResults, renderTenantMix, runTenantMix } from './tenant-mix.js';
import { findTools, type Log } from './tools.js';

/**
 * The benchmarks of issue 17 (per-round-trip cost): the engine alone (engine-hop.ts) and the
 * multi-tenant mix (tenant-mix.ts). They ride along in run.ts's results file like the HTTP one.
 */

export const ROUND_TRIP_BENCHES = [ENGINE_BENCH, MIX_BENCH] as const;
export type RoundTripBench = (typeof ROUND_TRIP_BENCHES)[number];

export interface RoundTripResults {
  engine?: EngineHopResults;
  mix?: MixResults;
}

export async function runRoundTripBenches(opts: {
  selected: readonly string[] | undefined;
  quick: boolean;
  /** --mix-seconds (default 60, --quick 3). */
  mixSeconds?: number;
  log: Log;
}): Promise<RoundTripResults> {
  const wants = (name: RoundTripBench) => opts.selected === undefined || opts.selected.includes(name);
  const results: RoundTripResults = {};
  if (wants(ENGINE_BENCH)) results.engine = await runEngineHop({ quick: opts.quick, log: opts.log });
  if (wants(MIX_BENCH)) {
    results.mix = await runTenantMix({
      quick: opts.quick,
      seconds: opts.mixSeconds,
      postgresBinDir: findTools().postgresBinDir,
      log: opts.log,
    });
  }
  return results;
}

export function renderRoundTripBenches(results: RoundTripResults): string {
  const parts: string[] = [];
  if (results.engine) parts.push(renderEngineHop(results.engine));
  if (results.mix) parts.push(renderTenantMix(results.mix));
  return parts.join('\n\n');
}

export async function appendRoundTripReport(file: string, results: RoundTripResults): Promise<void> {
  const text = renderRoundTripBenches(results);
  if (text) await appendFile(file, `\n${text}\n`);
}
