import { readFileSync } from 'node:fs';
import type { Profiler, Runtime } from 'node:inspector';
import path from 'node:path';

/**
 * The stages of one round trip, and which one each CPU-profile sample belongs to: a sample's self
 * time goes to the nearest frame on its stack that belongs to a known component (TLS, socket I/O,
 * pooler, engine hop, PGlite, WASM Postgres, the waits, …). `breakdown` sums one thread's samples
 * into µs per stage; the report divides by the transactions. Apart from the profiling run because
 * the classification is what gets read and adjusted when a new frame shows up in the wrong row.
 */

export type ThreadName = 'main' | 'worker';

export const STAGES = [
  { id: 'tls', label: 'TLS JS (node:tls, _tls_wrap)' },
  { id: 'net', label: 'socket I/O: node:net + streams JS, native writes (gateway: + TLS encryption)' },
  { id: 'program', label: '(program): native outside JS (libuv, TLS decrypt on read, task queues)' },
  { id: 'pgGateway', label: 'pg-gateway (node_modules/pg-gateway)' },
  { id: 'gatewaySrc', label: 'gateway protocol (src/gateway, src/wire)' },
  { id: 'pgliteSocket', label: 'pglite-socket server JS' },
  { id: 'pooler', label: 'pooler (src/pooler)' },
  { id: 'databases', label: 'databases (src/databases: hold, activity)' },
  { id: 'metrics', label: 'metrics (prom-client)' },
  { id: 'srcOther', label: 'other src/' },
  { id: 'hopJs', label: 'engine hop, main-thread JS (src/engine)' },
  { id: 'hopNotify', label: 'engine hop, Atomics.notify wake-ups (ring; worker: sendReply)' },
  { id: 'postMessage', label: 'engine hop, postMessage / MessagePort' },
  { id: 'workerJs', label: 'engine worker JS (engine-worker, channel, batcher, durable-fs)' },
  { id: 'pgliteJs', label: 'PGlite JS glue (@electric-sql/pglite, Emscripten runtime)' },
  { id: 'fs', label: 'file system calls from the engine (NODEFS fstat/read/…)' },
  { id: 'wasm', label: 'WASM Postgres' },
  { id: 'logging', label: 'logging (pino)' },
  { id: 'gc', label: 'GC' },
  { id: 'core', label: 'Node core, other (events, microtasks, timers, buffers)' },
  { id: 'other', label: 'other' },
  { id: 'hopWait', label: 'wait: main thread spins / sleeps for the reply (sendInline)', wait: true },
  { id: 'idleEngine', label: "wait: event loop idle until the engine's reply (waitAsync)", wait: true },
  { id: 'idleClient', label: "wait: event loop idle until the client's next query", wait: true },
  { id: 'workerWait', label: 'wait: worker spins / sleeps for the next request (doorbell)', wait: true },
] as const;
export type StageId = (typeof STAGES)[number]['id'];
export const isWait = (id: StageId) => STAGES.some((s) => s.id === id && 'wait' in s && s.wait);

/** A frame's own stage, or: "ask my caller", "Node core unless a caller knows", "file system call". */
type Verdict = StageId | 'idle' | 'inherit' | 'core?' | 'fs?';
export type NodeStage = StageId | 'idle';

/** The engine worker runs an esbuild bundle of src/engine: its `// src/...` markers name the source of each line. */
const bundleSections = new Map<string, { line: number; file: string }[]>();
function bundleSource(url: string, line: number): string | undefined {
  if (!url.includes('/node_modules/.cache/pglite-gateway/engine-worker-')) return undefined;
  let sections = bundleSections.get(url);
  if (!sections) {
    sections = [];
    try {
      const text = readFileSync(new URL(url), 'utf8').split('\n');
      text.forEach((l, i) => {
        const m = /^\/\/ (src\/\S+\.ts)$/.exec(l);
        if (m?.[1]) sections?.push({ line: i, file: m[1] });
      });
    } catch {
      // unreadable: everything in it counts as engine-worker.ts
    }
    bundleSections.set(url, sections);
  }
  let file = 'src/engine/engine-worker.ts';
  for (const s of sections) if (s.line <= line) file = s.file;
  return file;
}

const projectSrc = `${path.resolve(import.meta.dirname, '..', 'src')}/`;
/** Native bindings of node:fs that Emscripten's NODEFS calls synchronously. */
const FS_NATIVES = new Set([
  'fstat',
  'lstat',
  'stat',
  'read',
  'write',
  'writeBuffer',
  'writeString',
  'open',
  'close',
  'fsync',
  'fdatasync',
  'ftruncate',
  'readdir',
  'readlink',
  'existsSync',
]);

function frameVerdict(frame: Runtime.CallFrame): Verdict {
  const { functionName: fn, url, lineNumber } = frame;
  if (fn === '(garbage collector)') return 'gc';
  if (fn === '(idle)') return 'idle';
  if (fn === '(program)') return 'program';
  if (url.startsWith('wasm://')) return 'wasm';
  if (url === '') return 'inherit';
  const workerFile = bundleSource(url, lineNumber);
  if (workerFile) {
    // The worker's loop, in the module's body (no line), sleeps on the doorbell in Atomics.wait.
    if (
      workerFile === 'src/engine/engine-worker.ts' &&
      ((fn === '' && lineNumber <= 0) || fn === 'spinWhile')
    )
      return 'workerWait';
    if (fn === 'sendReply') return 'hopNotify';
    return 'workerJs';
  }
  const file = url.startsWith('file://') ? new URL(url).pathname : url;
  if (file.startsWith(projectSrc)) {
    const rel = file.slice(projectSrc.length);
    if (rel.startsWith('engine/')) {
      if (fn === 'sendInline') return 'hopWait';
      if (fn === 'ring') return 'hopNotify';
      return 'hopJs';
    }
    if (rel.startsWith('pooler/')) return 'pooler';
    if (rel.startsWith('databases/')) return 'databases';
    if (rel.startsWith('gateway/') || rel.startsWith('wire/')) return 'gatewaySrc';
    if (rel === 'log.ts') return 'logging';
    return 'srcOther';
  }
  if (file.includes('/node_modules/')) {
    if (file.includes('/@electric-sql/pglite-socket/')) return 'pgliteSocket';
    if (file.includes('/@electric-sql/pglite')) return 'pgliteJs';
    if (file.includes('/pg-gateway/')) return 'pgGateway';
    if (file.includes('/prom-client/')) return 'metrics';
    if (/\/node_modules\/(pino|pino-std-serializers|thread-stream|sonic-boom)\//.test(file)) return 'logging';
    return 'other';
  }
  if (url.startsWith('node:')) {
    if (/^node:(fs|internal\/fs)\b/.test(url)) return 'fs?';
    if (/^node:(tls|_tls_wrap|_tls_common|crypto|internal\/tls|internal\/crypto)\b/.test(url)) return 'tls';
    if (/^node:(net|stream|internal\/stream_base_commons|internal\/streams|internal\/net)\b/.test(url))
      return 'net';
    if (/^node:(worker_threads|internal\/worker|internal\/per_context\/messageport)\b/.test(url))
      return 'postMessage';
    return 'core?';
  }
  return 'other';
}

/** Main-thread functions that run when the engine's reply arrives (not when the client writes). */
const ENGINE_WAKE = /^(awaitInline|takeInline|onReply|onChunk)$/;

/**
 * Each profile node's stage: its own frame's, else the nearest caller's that has one. Node's fs
 * (and a native fs binding at the leaf) under PGlite or the worker counts as a file system call.
 * Also which nodes run because the engine answered (a caller is ENGINE_WAKE in src/engine, or a
 * worker message arrived).
 */
function nodeStages(profile: Profiler.Profile): { stages: Map<number, NodeStage>; engineWake: Set<number> } {
  const parent = new Map<number, number>();
  const byId = new Map<number, Profiler.ProfileNode>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const out = new Map<number, NodeStage>();
  const engineWake = new Set<number>();
  for (const n of profile.nodes) {
    let fallback: StageId | undefined;
    let stage: NodeStage | undefined;
    let fsCall = n.callFrame.url === '' && FS_NATIVES.has(n.callFrame.functionName);
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const node = byId.get(id);
      if (!node || node.callFrame.functionName === '(root)') break;
      const v = frameVerdict(node.callFrame);
      if ((v === 'hopJs' && ENGINE_WAKE.test(node.callFrame.functionName)) || v === 'postMessage')
        engineWake.add(n.id);
      if (stage !== undefined || v === 'inherit') continue;
      if (v === 'fs?') {
        fsCall = true;
        continue;
      }
      if (v === 'core?') {
        fallback ??= 'core';
        continue;
      }
      stage = v;
    }
    if (fsCall && (stage === 'pgliteJs' || stage === 'workerJs')) stage = 'fs';
    out.set(n.id, stage ?? fallback ?? (n.callFrame.functionName === '(root)' ? 'program' : 'other'));
  }
  return { stages: out, engineWake };
}

export interface ThreadBreakdown {
  stages: Map<StageId, number>;
  /** Self µs by function (for the top list). */
  functions: Map<string, { us: number; stage: NodeStage }>;
  sampledUs: number;
  samples: number;
}

/**
 * Self time (µs) per stage of the samples taken inside [fromUs, toUs] (monotonic clock). A run of
 * idle samples on the main thread goes to what ended it: the engine's reply (the next sample runs
 * under awaitInline & co.), or anything else (the client's next query).
 */
export function breakdown(
  profile: Profiler.Profile,
  fromUs: number,
  toUs: number,
  thread: ThreadName,
): ThreadBreakdown {
  const { stages: stageOf, engineWake } = nodeStages(profile);
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const stages = new Map<StageId, number>();
  const add = (stage: StageId, us: number) => stages.set(stage, (stages.get(stage) ?? 0) + us);
  const functions = new Map<string, { us: number; stage: NodeStage }>();
  const deltas = profile.timeDeltas ?? [];
  const samples = profile.samples ?? [];
  let t = profile.startTime;
  let sampledUs = 0;
  let count = 0;
  let idle = 0;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const us = deltas[i + 1] ?? 0;
    const id = samples[i];
    if (id === undefined || t < fromUs || t > toUs) continue;
    const stage = stageOf.get(id) ?? 'other';
    if (stage === 'idle') {
      if (thread === 'worker') add('workerWait', us);
      else idle += us;
    } else {
      add(stage, us);
      if (idle > 0 && stage !== 'program' && stage !== 'gc') {
        add(engineWake.has(id) ? 'idleEngine' : 'idleClient', idle);
        idle = 0;
      }
    }
    const f = frames.get(id);
    if (f) {
      const where = f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : '(native)';
      const key = `${f.functionName || '(anonymous)'} ${where}`;
      const entry = functions.get(key) ?? { us: 0, stage };
      entry.us += us;
      functions.set(key, entry);
    }
    sampledUs += us;
    count++;
  }
  if (idle > 0) add('idleClient', idle);
  return { stages, functions, sampledUs, samples: count };
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0)
    return url.slice(nm + '/node_modules/'.length).replace(/engine-worker-[0-9a-f]+/, 'engine-worker');
  const root = `file://${path.resolve(import.meta.dirname, '..')}/`;
  return url.startsWith(root) ? url.slice(root.length) : url;
}
