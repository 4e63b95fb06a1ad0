import { appendFile } from 'node:fs/promises';
import { HTTP_CLIENTS, type HttpBenchResults, type HttpBenchRow } from './http-bench.js';
import { HTTP_WORKLOADS, type HttpWorkload, TRANSPORTS, type Transport } from './http-drivers.js';
import { cell, num, ratio, statusText, table } from './markdown.js';

/** The HTTP benchmark's tables: TPS side by side with ratios to TCP, then latency per row. */

const TITLE: Record<HttpWorkload, string> = {
  'select 1': '`select 1`',
  tpcb: 'TPC-B-like transaction (scale 1; over /sql one batch request)',
};

function tps(row: HttpBenchRow | undefined): string {
  if (!row) return '—';
  return row.status === 'ok' ? num(row.tps) : '**failed**';
}

const okTps = (row: HttpBenchRow | undefined) => (row?.status === 'ok' ? row.tps : undefined);

const LABEL: Record<Transport, string> = {
  tcp: 'TCP: node-postgres, TLS',
  http: '/sql HTTP/1.1 keep-alive',
  'http-uncached': '/sql HTTP/1.1, password cache emptied per request',
  http2: '/sql HTTP/2 (one connection)',
  websocket: 'WebSocket: Neon Client (defaults)',
  'websocket-uncoalesced': 'WebSocket: Neon Client, coalesceWrites off',
};

export function renderHttpReport(http: HttpBenchResults): string {
  const out: string[] = [];
  const find = (transport: Transport, workload: HttpWorkload, clients: number) =>
    http.rows.find((r) => r.transport === transport && r.workload === workload && r.clients === clients);
  const seconds = http.rows[0]?.seconds;
  for (const workload of HTTP_WORKLOADS) {
    if (!http.rows.some((r) => r.workload === workload)) continue;
    out.push(`### HTTP front door: ${TITLE[workload]}, ${seconds} s per row: TPS\n`);
    out.push(
      table(
        ['transport', ...HTTP_CLIENTS.flatMap((c) => [`${c} client${c > 1 ? 's' : ''}`, '/ TCP'])],
        ['l', ...HTTP_CLIENTS.flatMap(() => ['r', 'r'] as const)],
        TRANSPORTS.filter((t) => http.rows.some((r) => r.transport === t)).map((transport) => [
          LABEL[transport],
          ...HTTP_CLIENTS.flatMap((clients) => {
            const row = find(transport, workload, clients);
            return [tps(row), ratio(okTps(row), okTps(find('tcp', workload, clients)))];
          }),
        ]),
      ),
    );
    out.push('');
  }
  out.push('### HTTP front door: latency\n');
  out.push(
    table(
      ['workload', 'transport', 'clients', 'transactions', 'avg ms', 'p99 ms', 'other CPU (cores)', 'status'],
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'l'],
      http.rows.map((r) => [
        r.workload,
        r.transport,
        String(r.clients),
        num(r.transactions, 0),
        num(r.latencyAvgMs),
        num(r.latencyP99Ms),
        num(r.otherCpuCores),
        statusText(r.status, r.error),
      ]),
    ),
  );
  out.push(`\nHow: ${cell(http.description)}.`);
  if (http.errors.length > 0) out.push(`\nErrors: ${http.errors.map(cell).join('; ')}`);
  return out.join('\n');
}

/** Adds the HTTP tables to the end of a BENCHMARKS.md that report.ts just wrote. */
export async function appendHttpReport(file: string, http: HttpBenchResults): Promise<void> {
  await appendFile(file, `\n${renderHttpReport(http)}\n`);
}
