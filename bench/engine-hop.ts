import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import type { Engine } from '../src/engine/engine.js';
import { EngineHost } from '../src/engine/engine-host.js';
import { postgresSettings } from '../src/engine/pglite-open.js';
import { createFromTemplate } from '../src/pgdata/template.js';
import { query } from '../src/wire/protocol.js';
import { table } from './markdown.js';
import { benchTemplate } from './systems/gateway.js';
import { cpuSnapshot, errorMessage, type Log, otherCpuCores, percentile, round } from './tools.js';

/**
 * The engine alone: raw protocol `select 1` (a Query message, its bytes back) one after another,
 * through a database worker (the gateway's path minus network, TLS and pooler) and through a
 * PGlite called in this process, so what the hop to the worker costs shows on its own. The worker
 * path is measured twice: through the shared-memory slot (engine/channel.ts, the default) and with
 * every request posted (postMessage), as before it. Rounds alternate between the paths so load
 * from elsewhere spreads over all of them.
 */

export const ENGINE_BENCH = 'engine';

export type EnginePath = 'in-process PGlite' | 'worker, shared-memory slot' | 'worker, postMessage';

export interface EngineHopRow {
  path: EnginePath;
  status: 'ok' | 'failed';
  error?: string;
  n?: number;
  p50Us?: number;
  p99Us?: number;
  meanUs?: number;
  /** Mean latency over the in-process PGlite's. */
  ratio?: number;
  /** Median latency over the in-process PGlite's (steadier than the mean on a busy machine). */
  p50Ratio?: number;
}

export interface EngineHopResults {
  rows: EngineHopRow[];
  otherCpuCores?: number;
  errors: string[];
}

type Exec = (bytes: Uint8Array) => Promise<unknown>;

async function timeRound(exec: Exec, n: number, into: number[]): Promise<void> {
  const message = query('select 1');
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await exec(message);
    into.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
}

export async function runEngineHop(opts: { quick: boolean; log: Log }): Promise<EngineHopResults> {
  const root = await mkdtemp(path.join(tmpdir(), 'bench-engine-hop-'));
  const hosts: EngineHost[] = [];
  const engines: Engine[] = [];
  let pglite: PGlite | undefined;
  try {
    const template = await benchTemplate();
    const dir = async (name: string) => {
      const d = path.join(root, name);
      await createFromTemplate(template, d);
      return d;
    };
    const settings = postgresSettings(16 * 1024 * 1024);
    const open = async (inlineRequests: boolean, name: string) => {
      const host = new EngineHost({ warm: 0, settings, fsync: false, inlineRequests });
      hosts.push(host);
      const engine = await host.open(await dir(name), { readOnly: false });
      engines.push(engine);
      return engine;
    };
    const slot = await open(true, 'slot');
    const posted = await open(false, 'posted');
    pglite = new PGlite({ dataDir: await dir('in-process') });
    await pglite.waitReady;
    const local = pglite;
    const paths: [EnginePath, Exec][] = [
      ['in-process PGlite', (m) => local.execProtocolRaw(m)],
      ['worker, shared-memory slot', (m) => slot.exec(m)],
      ['worker, postMessage', (m) => posted.exec(m)],
    ];
    const perRound = opts.quick ? 200 : 2000;
    const rounds = opts.quick ? 2 : 5;
    const samples = new Map<EnginePath, number[]>(paths.map(([p]) => [p, []]));
    for (const [, exec] of paths) await timeRound(exec, 100, []); // warm-up
    const cpu = cpuSnapshot();
    for (let r = 0; r < rounds; r++) {
      for (const [p, exec] of paths) await timeRound(exec, perRound, samples.get(p) as number[]);
    }
    const others = otherCpuCores(cpu, cpuSnapshot());
    const base = mean(samples.get('in-process PGlite') as number[]);
    const baseP50 = percentile(samples.get('in-process PGlite') as number[], 50) ?? 1;
    const rows = paths.map(([p]): EngineHopRow => {
      const s = samples.get(p) as number[];
      const m = mean(s);
      return {
        path: p,
        status: 'ok',
        n: s.length,
        p50Us: round(percentile(s, 50), 1),
        p99Us: round(percentile(s, 99), 1),
        meanUs: round(m, 1),
        ratio: round(m / base, 2),
        p50Ratio: round((percentile(s, 50) ?? 0) / baseP50, 2),
      };
    });
    for (const row of rows) opts.log(`[engine] ${row.path}: mean ${row.meanUs} µs p50 ${row.p50Us} µs`);
    return { rows, otherCpuCores: others, errors: [] };
  } catch (err) {
    const error = `engine benchmark failed: ${errorMessage(err)}`;
    opts.log(error);
    return { rows: [], errors: [error] };
  } finally {
    for (const e of engines) await e.close().catch(() => undefined);
    for (const h of hosts) await h.close().catch(() => undefined);
    await pglite?.close().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  }
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
}

export function renderEngineHop(results: EngineHopResults): string {
  const out = [
    '### The engine alone: raw protocol `select 1`, one at a time\n',
    table(
      ['path', 'n', 'mean µs', 'p50 µs', 'p99 µs', 'mean / in-process', 'p50 / in-process'],
      ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
      results.rows.map((r) => [
        r.path,
        String(r.n ?? '—'),
        String(r.meanUs ?? '—'),
        String(r.p50Us ?? '—'),
        String(r.p99Us ?? '—'),
        r.ratio === undefined ? '—' : `${r.ratio}×`,
        r.p50Ratio === undefined ? '—' : `${r.p50Ratio}×`,
      ]),
    ),
  ];
  if (results.otherCpuCores !== undefined) {
    out.push(`\nOther processes used ${results.otherCpuCores} cores on average meanwhile.`);
  }
  for (const e of results.errors) out.push(`\n**error**: ${e}`);
  return out.join('\n');
}
