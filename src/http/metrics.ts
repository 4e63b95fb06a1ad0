import { Counter, collectDefaultMetrics, Gauge, Histogram, type Registry } from 'prom-client';
import type { CloseCause, DatabaseActivity, NodeActivity } from '../databases/activity.js';
import type { OpenDatabaseView } from '../databases/registry.js';
import type { AuthThrottle } from '../gateway/auth-throttle.js';

/**
 * The node's Prometheus metrics. Lower layers count (databases/activity.ts, the registry, the
 * login throttle); this module reads their numbers at scrape time and feeds the histograms from
 * their observations. Per-database series exist only for the METRICS_TOP_DBS busiest databases,
 * so a node with thousands of databases exposes a bounded number of series. README lists them.
 */

export const METRIC_OPEN_DATABASES = 'pglite_gateway_open_databases';
export const METRIC_CONNECTED_CLIENTS = 'pglite_gateway_connected_clients';
export const METRIC_AUTH_FAILURES = 'pglite_gateway_auth_failures_total';
export const METRIC_AUTH_THROTTLED = 'pglite_gateway_auth_throttled_total';

/** What the metrics read; every source is optional (its metrics read 0). */
export interface MetricsSources {
  registry?:
    | {
        readonly openCount: number;
        readonly activity: NodeActivity;
        openViews(): OpenDatabaseView[];
      }
    | undefined;
  listener?: { readonly connectionCount: number } | undefined;
  authThrottle?: Pick<AuthThrottle, 'counts'> | undefined;
  engines?: { readonly warmCount: number } | undefined;
  walShipping?: { backlogBytes(): number } | undefined;
  /** METRICS_TOP_DBS; default 20. */
  topDatabases?: number | undefined;
}

const P = 'pglite_gateway_';
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const OPEN_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ARCHIVE_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const CAUSES: CloseCause[] = ['idle', 'capacity', 'admin', 'shutdown'];

/** The `n` databases with the most units of work (ties: by id, so the set is stable). */
export function busiest(all: Iterable<DatabaseActivity>, n: number): DatabaseActivity[] {
  if (n <= 0) return [];
  return [...all]
    .filter((a) => a.units > 0)
    .sort((a, b) => b.units - a.units || (a.id < b.id ? -1 : 1))
    .slice(0, n);
}

/** A counter whose value is read from a lower layer at scrape time. */
function readCounter(registry: Registry, name: string, help: string, read: () => number): void {
  const counter: Counter = new Counter({
    name,
    help,
    registers: [registry],
    collect: () => {
      counter.reset();
      counter.inc(read());
    },
  });
}

function readGauge(registry: Registry, name: string, help: string, read: () => number): void {
  const gauge: Gauge = new Gauge({ name, help, registers: [registry], collect: () => gauge.set(read()) });
}

/** Registers the node's metrics on `registry` (once per registry; later calls do nothing). */
export function registerMetrics(registry: Registry, src: MetricsSources): void {
  if (registry.getSingleMetric(METRIC_OPEN_DATABASES)) return;
  collectDefaultMetrics({ register: registry });
  const activity = src.registry?.activity;
  const totals = () => activity?.totals;
  const views = () => src.registry?.openViews() ?? [];

  readGauge(registry, METRIC_OPEN_DATABASES, 'Databases currently open (a PGlite instance in memory).', () =>
    Number(src.registry?.openCount ?? 0),
  );
  readGauge(registry, `${P}warm_workers`, 'Database workers parked and ready for the next open.', () =>
    Number(src.engines?.warmCount ?? 0),
  );
  readGauge(
    registry,
    METRIC_CONNECTED_CLIENTS,
    'Postgres client connections currently open on the gateway.',
    () => Number(src.listener?.connectionCount ?? 0),
  );
  readGauge(
    registry,
    `${P}database_clients`,
    'Clients attached to open databases (Postgres, WebSocket and SQL-over-HTTP requests).',
    () => views().reduce((n, v) => n + v.clients, 0),
  );
  readGauge(registry, `${P}waiting_clients`, "Clients waiting for their database's session.", () =>
    views().reduce((n, v) => n + v.waiting, 0),
  );
  readCounter(
    registry,
    `${P}queries_total`,
    'Units of work run (a simple Query, or extended messages up to Sync).',
    () => Number(totals()?.units ?? 0),
  );
  readCounter(
    registry,
    `${P}transactions_total`,
    'Units that ended a transaction (explicit or autocommit).',
    () => Number(totals()?.transactions ?? 0),
  );
  readCounter(
    registry,
    `${P}database_opens_total`,
    'Database opens (a PGlite started on a data directory).',
    () => Number(totals()?.opens ?? 0),
  );
  readCounter(registry, `${P}database_open_failures_total`, 'Database opens that failed.', () =>
    Number(totals()?.openFailures ?? 0),
  );
  const closes: Counter<'cause'> = new Counter({
    name: `${P}database_closes_total`,
    help: 'Databases closed, by cause: idle, capacity (evicted for room), admin, shutdown.',
    labelNames: ['cause'],
    registers: [registry],
    collect: () => {
      closes.reset();
      for (const cause of CAUSES) closes.inc({ cause }, totals()?.closes[cause] ?? 0);
    },
  });
  readCounter(
    registry,
    `${P}snapshot_bytes_total`,
    'Bytes of snapshots (base backups) stored in the archive.',
    () => Number(activity?.totals.snapshotBytes ?? 0),
  );
  readCounter(registry, `${P}wal_shipped_bytes_total`, 'Bytes of WAL shipped to the archive.', () =>
    Number(totals()?.walBytes ?? 0),
  );
  readGauge(
    registry,
    `${P}wal_backlog_bytes`,
    'WAL written by open databases and not yet in the archive.',
    () => Number(src.walShipping?.backlogBytes() ?? 0),
  );
  const archiveErrors: Counter<'operation'> = new Counter({
    name: `${P}archive_errors_total`,
    help: 'Failed archive operations, by operation: snapshot, wal.',
    labelNames: ['operation'],
    registers: [registry],
    collect: () => {
      archiveErrors.reset();
      archiveErrors.inc({ operation: 'snapshot' }, activity?.totals.snapshotErrors ?? 0);
      archiveErrors.inc({ operation: 'wal' }, activity?.totals.walErrors ?? 0);
    },
  });
  readCounter(registry, METRIC_AUTH_FAILURES, 'Failed Postgres logins (answered 28P01).', () =>
    Number(src.authThrottle?.counts.failures ?? 0),
  );
  readCounter(registry, METRIC_AUTH_THROTTLED, 'Postgres login attempts delayed by the throttle.', () =>
    Number(src.authThrottle?.counts.throttled ?? 0),
  );

  const queryDuration = new Histogram({
    name: `${P}query_duration_seconds`,
    help: 'Time of a unit of work on its database, from its first message to its reply.',
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const queueWait = new Histogram({
    name: `${P}queue_wait_seconds`,
    help: "Time a client waited for its database's session before a unit (0 when it was free).",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const openDuration = new Histogram({
    name: `${P}database_open_duration_seconds`,
    help: 'Time to open a database (fetch from the archive, start PGlite, recovery).',
    buckets: OPEN_BUCKETS,
    registers: [registry],
  });
  const snapshotDuration = new Histogram({
    name: `${P}snapshot_duration_seconds`,
    help: 'Time to take a snapshot (base backup) and store it in the archive.',
    buckets: ARCHIVE_BUCKETS,
    registers: [registry],
  });
  const walShipDuration = new Histogram({
    name: `${P}wal_ship_duration_seconds`,
    help: 'Time to ship one batch of WAL to the archive.',
    buckets: ARCHIVE_BUCKETS,
    registers: [registry],
  });
  activity?.observe({
    unit: (_db, seconds) => queryDuration.observe(seconds),
    wait: (_db, seconds) => queueWait.observe(seconds),
    opened: (_db, seconds) => openDuration.observe(seconds),
    snapshot: (_db, seconds) => snapshotDuration.observe(seconds),
    walShipped: (_db, seconds) => walShipDuration.observe(seconds),
  });

  registerPerDatabase(registry, src);
}

/** Series labelled `database`, for the busiest METRICS_TOP_DBS databases only. */
function registerPerDatabase(registry: Registry, src: MetricsSources): void {
  const top = () => busiest(src.registry?.activity.all() ?? [], src.topDatabases ?? 20);
  const perDatabase = (
    name: string,
    help: string,
    kind: 'counter' | 'gauge',
    read: (a: DatabaseActivity, open: OpenDatabaseView | undefined) => number,
  ) => {
    const collect = (metric: Counter<'database'> | Gauge<'database'>) => {
      metric.reset();
      const open = new Map((src.registry?.openViews() ?? []).map((v) => [v.id, v]));
      for (const a of top()) {
        const value = read(a, open.get(a.id));
        if (metric instanceof Counter) metric.inc({ database: a.id }, value);
        else metric.set({ database: a.id }, value);
      }
    };
    if (kind === 'counter') {
      const c: Counter<'database'> = new Counter({
        name,
        help,
        labelNames: ['database'],
        registers: [registry],
        collect: () => collect(c),
      });
    } else {
      const g: Gauge<'database'> = new Gauge({
        name,
        help,
        labelNames: ['database'],
        registers: [registry],
        collect: () => collect(g),
      });
    }
  };
  perDatabase(
    `${P}database_queries_total`,
    'Units of work run, per busiest database.',
    'counter',
    (a) => a.units,
  );
  perDatabase(
    `${P}database_transactions_total`,
    'Transactions ended, per busiest database.',
    'counter',
    (a) => a.transactions,
  );
  perDatabase(
    `${P}database_queue_wait_seconds_total`,
    "Time clients waited for the database's session, per busiest database.",
    'counter',
    (a) => a.waitSeconds,
  );
  perDatabase(
    `${P}database_connected_clients`,
    'Clients attached, per busiest database (0 when closed).',
    'gauge',
    (_a, open) => open?.clients ?? 0,
  );
  perDatabase(
    `${P}database_waiting_clients`,
    'Clients waiting for the session, per busiest database.',
    'gauge',
    (_a, open) => open?.waiting ?? 0,
  );
}
