import {
  createTpcbTables,
  HTTP_WORKLOADS,
  type HttpTarget,
  type HttpWorkload,
  openSessions,
  TRANSPORTS,
  type Transport,
} from './http-drivers.js';
import { startGateway } from './systems/gateway.js';
import { cpuSnapshot, errorMessage, type Log, mean, otherCpuCores, percentile, round } from './tools.js';
import type { RowStatus } from './types.js';

/**
 * `npm run bench -- --only http`: the HTTPS front door next to the Postgres listener, on one
 * gateway in the same run. For `select 1` and a TPC-B-like transaction at 1 and 8 concurrent
 * clients, each transport runs closed-loop for the same seconds: node-postgres over TLS (TCP),
 * `POST /sql` over HTTP/1.1 keep-alive and over HTTP/2 (one request per transaction: TPC-B is one
 * batch), and the Neon driver's Client over wss. Reported are transactions per second and latency.
 */

/** The name `--only` knows this benchmark by. */
export const HTTP_BENCH = 'http';

export interface HttpBenchRow {
  transport: Transport;
  workload: HttpWorkload;
  clients: number;
  seconds: number;
  status: RowStatus;
  error?: string;
  tps?: number;
  latencyAvgMs?: number;
  latencyP99Ms?: number;
  transactions?: number;
  /** Average cores other processes on the machine used meanwhile (see tools.ts cpuSnapshot). */
  otherCpuCores?: number;
}

export interface HttpBenchResults {
  description: string;
  rows: HttpBenchRow[];
  errors: string[];
}

export const HTTP_CLIENTS = [1, 8] as const;

/** Runs `sessions` closed-loop for `seconds`, each recording its transactions' latencies. */
async function measure(
  sessions: { run(w: HttpWorkload): Promise<void> }[],
  workload: HttpWorkload,
  seconds: number,
): Promise<{ latencies: number[]; elapsedMs: number }> {
  const latencies: number[] = [];
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    sessions.map(async (s) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        await s.run(workload);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return { latencies, elapsedMs: performance.now() - started };
}

async function runRow(
  t: HttpTarget,
  transport: Transport,
  workload: HttpWorkload,
  clients: number,
  seconds: number,
): Promise<HttpBenchRow> {
  const base = { transport, workload, clients, seconds };
  let opened: Awaited<ReturnType<typeof openSessions>> | undefined;
  try {
    opened = await openSessions(transport, t, clients);
    // A short warm-up: connections, statement caches and the TLS session are set up before timing.
    await measure(opened.sessions, workload, Math.min(1, seconds / 4));
    const cpu = cpuSnapshot();
    const { latencies, elapsedMs } = await measure(opened.sessions, workload, seconds);
    return {
      ...base,
      status: 'ok',
      tps: round(latencies.length / (elapsedMs / 1000), 1),
      latencyAvgMs: round(mean(latencies), 3),
      latencyP99Ms: round(percentile(latencies, 99), 3),
      transactions: latencies.length,
      otherCpuCores: otherCpuCores(cpu, cpuSnapshot()),
    };
  } catch (err) {
    return { ...base, status: 'failed', error: errorMessage(err) };
  } finally {
    await opened?.close();
  }
}

export async function runHttpBench(opts: {
  seconds: number;
  templateDir?: string;
  log: Log;
}): Promise<HttpBenchResults> {
  const results: HttpBenchResults = {
    description:
      'one in-process gateway, clients in the same process; TCP = node-postgres over TLS (SCRAM once per ' +
      'connection, BEGIN + 5 statements + END per TPC-B transaction); /sql = POST /sql, the password checked per ' +
      'request, TPC-B as one batch request: HTTP/1.1 keep-alive with one connection per client, or HTTP/2 with ' +
      'every client a stream of one connection; WebSocket = @neondatabase/serverless Client over wss (defaults: ' +
      'pipelined password, coalesced writes) and with neonConfig.coalesceWrites = false, statements as over TCP',
    rows: [],
    errors: [],
  };
  const t0 = performance.now();
  opts.log('== http (TCP vs /sql vs WebSocket)');
  let system: Awaited<ReturnType<typeof startGateway>> | undefined;
  try {
    system = await startGateway({ templateDir: opts.templateDir });
    const target = await system.createDatabase('httpbench');
    await createTpcbTables(target);
    const t: HttpTarget = {
      target,
      httpPort: system.server.httpPort,
      ca: system.ca,
      password: String(target.pgConfig.password),
    };
    for (const workload of HTTP_WORKLOADS) {
      for (const clients of HTTP_CLIENTS) {
        for (const transport of TRANSPORTS) {
          const row = await runRow(t, transport, workload, clients, opts.seconds);
          results.rows.push(row);
          opts.log(
            `[http] ${workload} ${transport} c=${clients}: ` +
              (row.status === 'ok' ? `${row.tps} tps, avg ${row.latencyAvgMs} ms` : `FAILED: ${row.error}`),
          );
        }
      }
    }
  } catch (err) {
    results.errors.push(`http benchmark: ${errorMessage(err)}`);
  } finally {
    await system?.stop().catch((err: unknown) => {
      results.errors.push(`gateway did not stop cleanly: ${errorMessage(err)}`);
    });
    opts.log(`== http done in ${Math.round((performance.now() - t0) / 1000)} s`);
  }
  return results;
}
