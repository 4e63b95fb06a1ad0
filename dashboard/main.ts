import { lineChart } from './chart.js';
import { clusterView, moveControl } from './cluster.js';
import { ago, confirmAction, formatBytes, h } from './dom.js';
import { DatabaseTable } from './table.js';
import type { DatabaseDetail, StatsSnapshot } from './types.js';

/**
 * The dashboard: a cluster view (nodes and their load, cluster.ts), TPS and latency charts, the
 * database table, a database's detail with its actions, and recent events. Fed by /v1/stats/stream
 * (Server-Sent Events; the browser reconnects by itself); actions call the admin API with the
 * session cookie, each after a confirmation.
 */

const root = document.getElementById('app') as HTMLElement;
let latest: StatsSnapshot | undefined;
let selected: string | undefined;
let faults: string[] = [];
/** When the selected database's detail was last fetched: refreshed every few seconds while live. */
let detailAt = 0;
const DETAIL_REFRESH_MS = 2000;

const status = h('span', { class: 'muted', 'data-testid': 'stream-status' }, 'connecting…');
const notice = h('span', { role: 'status', 'data-testid': 'notice' });
const clusterBox = h('section', { 'data-testid': 'cluster' });
const chartsBox = h('section', { 'data-testid': 'charts' });
const detailBox = h('section', { 'data-testid': 'detail' }, h('p', { class: 'muted' }, 'Select a database.'));
const eventsBox = h('section', { 'data-testid': 'events' });
const table = new DatabaseTable((id) => void showDetail(id));

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) window.location.assign('/dashboard');
  return res;
}

async function act(
  label: string,
  question: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<void> {
  if (!(await confirmAction(question, label))) return;
  const res = await api(method, path, body);
  const answer = (await res.json().catch(() => ({}))) as {
    error?: string;
    /** A drain's outcome, one entry per database it owned. */
    databases?: { database: string; error?: string }[];
  };
  const failed = answer.databases?.filter((d) => d.error) ?? [];
  notice.textContent = !res.ok
    ? `${label} failed: ${answer.error ?? res.status}`
    : failed.length > 0
      ? `${label}: done, ${failed.length} failed (${failed[0]?.database}: ${failed[0]?.error})`
      : `${label}: done`;
  if (selected) void showDetail(selected);
}

function renderCluster(s: StatsSnapshot): void {
  clusterBox.replaceChildren(...clusterView(s, faults, act));
  chartsBox.replaceChildren(
    h('h2', {}, 'Last minutes'),
    lineChart(
      s.history.map((p) => [p.at, p.tps]),
      'TPS',
      'tx/s',
    ),
    lineChart(
      s.history.map((p) => [p.at, p.latencyMs]),
      'Mean latency',
      'ms',
    ),
  );
  eventsBox.replaceChildren(
    h('h2', {}, 'Recent events'),
    h(
      'ul',
      { class: 'events' },
      ...s.events
        .slice()
        .reverse()
        .map((e) =>
          h(
            'li',
            {},
            h('span', { class: 'muted' }, new Date(e.at).toLocaleTimeString(), ' '),
            `${e.kind} ${e.db}`,
            e.detail ? ` · ${e.detail}` : '',
          ),
        ),
    ),
  );
}

async function showDetail(id: string): Promise<void> {
  selected = id;
  detailAt = Date.now();
  table.select(id);
  const res = await api('GET', `/v1/stats/databases/${encodeURIComponent(id)}`);
  if (!res.ok) {
    detailBox.replaceChildren(h('h2', {}, id), h('p', { class: 'error' }, `not available (${res.status})`));
    return;
  }
  const d = (await res.json()) as DatabaseDetail;
  if (selected !== id) return;
  const row = latest?.databases.find((x) => x.id === id);
  const state = row?.state ?? 'closed';
  const path = `/v1/databases/${encodeURIComponent(id)}`;
  detailBox.replaceChildren(
    h('h2', {}, `Database ${id}`),
    h(
      'p',
      {},
      `State `,
      h('b', { 'data-testid': 'detail-state' }, state),
      ` · node `,
      h('span', { 'data-testid': 'detail-owner' }, d.owner ?? 'none'),
      ` · ${d.queries} queries · ${d.transactions} transactions`,
      row?.memoryBytes ? ` · ${formatBytes(row.memoryBytes)} in memory` : '',
    ),
    h('p', {}, 'Connection string: ', h('code', { 'data-testid': 'connection-string' }, d.connectionString)),
    h(
      'div',
      { class: 'controls' },
      h(
        'button',
        {
          class: 'danger',
          'data-testid': 'close-db',
          onclick: () =>
            void act('Close', `Close database ${id}? Its clients are disconnected.`, 'POST', `${path}/close`),
        },
        'Close database',
      ),
      moveControl(id, d.owner, latest, act),
    ),
    lineChart(d.latencies, 'Recent statement latency', 'ms'),
    h('h2', {}, `Clients (${d.clients.length})`),
    h(
      'table',
      { 'data-testid': 'clients-table' },
      h(
        'tbody',
        {},
        ...d.clients.map((c) =>
          h(
            'tr',
            {},
            h('td', {}, `#${c.id}`),
            h('td', {}, `connected ${ago(c.connectedAt)}`),
            h(
              'td',
              {},
              h(
                'button',
                {
                  class: 'danger',
                  onclick: () =>
                    void act(
                      'Disconnect',
                      `Disconnect client #${c.id} of ${id}?`,
                      'DELETE',
                      `${path}/clients/${c.id}`,
                    ),
                },
                'Disconnect',
              ),
            ),
          ),
        ),
      ),
    ),
    h('h2', {}, 'Versions'),
    d.versions
      ? h(
          'div',
          {},
          h(
            'p',
            { class: 'muted', 'data-testid': 'restorable' },
            d.restorable
              ? `Restorable from ${d.restorable.earliest} to ${d.restorable.latest}`
              : 'No version yet.',
          ),
          h(
            'table',
            { 'data-testid': 'versions' },
            h(
              'tbody',
              {},
              ...d.versions.map((ver) =>
                h(
                  'tr',
                  {},
                  h('td', {}, h('code', {}, ver.version)),
                  h('td', {}, formatBytes(ver.sizeBytes)),
                  h(
                    'td',
                    {},
                    h(
                      'button',
                      {
                        class: 'danger',
                        onclick: () =>
                          void act(
                            'Restore',
                            `Restore ${id} to version ${ver.version}? Its clients are disconnected.`,
                            'POST',
                            `${path}/restore`,
                            { version: ver.version },
                          ),
                      },
                      'Restore',
                    ),
                  ),
                ),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No archive configured (ARCHIVE_URL): no versions.'),
  );
}

function connect(): void {
  const source = new EventSource('/v1/stats/stream');
  source.addEventListener('open', () => {
    status.textContent = 'live';
  });
  source.addEventListener('error', () => {
    status.textContent = 'reconnecting…';
  });
  source.addEventListener('stats', (e) => {
    latest = JSON.parse((e as MessageEvent<string>).data) as StatsSnapshot;
    status.textContent = `live · ${new Date(latest.at).toLocaleTimeString()}`;
    renderCluster(latest);
    table.update(latest.databases);
    if (selected && Date.now() - detailAt > DETAIL_REFRESH_MS) void showDetail(selected);
  });
}

async function start(): Promise<void> {
  const res = await api('GET', '/v1/faults');
  if (res.ok) faults = ((await res.json()) as { actions: string[] }).actions;
  root.className = '';
  root.replaceChildren(
    h(
      'header',
      {},
      h('h1', {}, 'pglite-gateway'),
      status,
      h('span', { class: 'grow' }),
      notice,
      h('form', { method: 'post', action: '/dashboard/sign-out' }, h('button', {}, 'Sign out')),
    ),
    h('main', {}, h('div', {}, clusterBox, table.element), h('div', {}, chartsBox, detailBox, eventsBox)),
  );
  connect();
}

void start();
