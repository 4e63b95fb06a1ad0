import { num, statusText, table } from './markdown.js';
import type { BaselineRssRow } from './types.js';

/** The baseline-RSS table and its description in BENCHMARKS.md (measured by baseline-rss.ts). */

export const BASELINE_RSS_DESCRIPTION = `- **Baseline RSS** (\`bench/baseline-rss.ts\`): a whole node with no database open, in a child
  process (temp \`DATA_DIR\`, dev certificates, embedded catalog, ports 0): RSS from
  \`/proc/<pid>/status\` when it logs "listening" and after it settled, as built JavaScript
  (\`npm run build\`, then \`node dist/src/cli/index.js serve\`) and under tsx, with
  \`WARM_ENGINES=0\` and \`2\`. Bare \`node\` is the floor, and two steps of a start (the modules
  loaded; the embedded catalog opened) show where the memory goes. Then SIGUSR2 makes the node
  collect its garbage (\`bench/gc-on-signal.mjs\`, preloaded) and RSS is read again. Medians of 5
  starts (1 with \`--quick\`).`;

export type Variant = Pick<BaselineRssRow, 'runtime' | 'warmEngines' | 'stage'>;

export function variantName(row: Variant): string {
  if (row.runtime === 'node') return 'bare node (floor)';
  if (row.stage === 'modules') return 'node dist/: the modules of `serve` loaded, nothing started';
  if (row.stage === 'catalog') return 'node dist/: modules + embedded catalog opened';
  const how = row.runtime === 'dist' ? 'node dist/' : 'node --import tsx src/';
  return `${how}, WARM_ENGINES=${row.warmEngines}`;
}

export function baselineRssTable(rows: readonly BaselineRssRow[] | undefined): string {
  if (!rows || rows.length === 0) return '';
  const first = rows[0] as BaselineRssRow;
  return [
    `### Memory at rest: RSS with no database open (median of ${first.repeats}, settled ${first.settleSeconds} s after "listening")\n`,
    table(
      [
        'node',
        'startup (s)',
        'RSS at "listening" (MiB)',
        'RSS settled (MiB)',
        'settled min–max (MiB)',
        'after GC (MiB)',
        'anonymous (MiB)',
        'file-backed (MiB)',
        'child processes (MiB)',
        'other CPU (cores)',
        'status',
      ],
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      rows.map((r) => [
        variantName(r),
        num(r.startupSeconds, 2),
        num(r.listeningMiB, 0),
        num(r.settledMiB, 0),
        r.settledMinMiB === undefined ? '—' : `${num(r.settledMinMiB, 0)}–${num(r.settledMaxMiB, 0)}`,
        num(r.afterGcMiB, 0),
        num(r.anonMiB, 0),
        num(r.fileMiB, 0),
        num(r.childrenMiB, 0),
        num(r.otherCpuCores, 2),
        statusText(r.status, r.error),
      ]),
    ),
    '',
  ].join('\n');
}
