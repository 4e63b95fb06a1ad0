import { formatBytes, h } from './dom.js';
import type { ClusterNodeStats, StatsSnapshot } from './types.js';

/**
 * The cluster view: summary cards and the nodes (liveness, open and owned databases, load where
 * this node knows it), with the fault actions a test harness offers; and a database's move
 * control (cluster mode, on the owner's dashboard). Every action goes through `act`, which asks
 * for a confirmation first.
 */

export type Act = (
  label: string,
  question: string,
  method: string,
  path: string,
  body?: unknown,
) => Promise<void>;

const DASH = '—';
const orDash = (v: number | null, format: (n: number) => string = String) => (v === null ? DASH : format(v));

/**
 * Draining: offered for the node serving the page (a node drains itself); it then takes no new
 * databases until it restarts and hands each one it owns to another live node.
 */
function drainButton(s: StatsSnapshot, n: ClusterNodeStats, act: Act): HTMLElement {
  const disabled = (title: string) =>
    h('button', { disabled: true, title, 'data-testid': 'drain-node' }, n.draining ? 'Draining' : 'Drain');
  if (s.cluster.mode !== 'cluster') return disabled('needs cluster mode');
  if (n.draining) return disabled('draining until it restarts');
  if (!n.self) return disabled(`run the drain on the dashboard of ${n.id}`);
  return h(
    'button',
    {
      class: 'danger',
      'data-testid': 'drain-node',
      onclick: () =>
        void act(
          'Drain',
          `Drain node ${n.id}? It takes no new databases until it restarts, and hands each of the ${n.ownedDatabases} it owns to another live node; their clients reconnect.`,
          'POST',
          `/v1/nodes/${encodeURIComponent(n.id)}/drain`,
        ),
    },
    'Drain…',
  );
}

const COLUMNS = ['Node', 'State', 'Open', 'Owned', 'Clients', 'TPS', 'Memory', 'WAL backlog', 'Heartbeat'];

/** A node's row, and a row of its actions under it: drain, the harness's faults. */
function nodeRows(s: StatsSnapshot, n: ClusterNodeStats, faults: readonly string[], act: Act): HTMLElement[] {
  const cells: (string | number)[] = [
    n.openDatabases,
    n.ownedDatabases,
    orDash(n.connectedClients),
    orDash(n.tps, (v) => v.toFixed(1)),
    orDash(n.rssBytes, formatBytes),
    orDash(n.walBacklogBytes, formatBytes),
    orDash(n.heartbeatAgeMs, (ms) => `${(ms / 1000).toFixed(1)} s ago`),
  ];
  const row = h(
    'tr',
    { 'data-node': n.id, 'data-state': n.state },
    h('td', {}, n.id, n.self ? ' (this node)' : ''),
    h('td', { class: `state-${n.state}`, 'data-testid': 'node-state' }, n.state),
    ...cells.map((v) => h('td', {}, v)),
  );
  const fault = (f: string) =>
    h(
      'button',
      {
        class: 'danger',
        'data-testid': `fault-${f}`,
        onclick: () =>
          void act(f, `${f} node ${n.id}?`, 'POST', `/v1/faults/${f}?node=${encodeURIComponent(n.id)}`),
      },
      f,
    );
  const actions = h(
    'tr',
    { 'data-node-actions': n.id },
    h(
      'td',
      { colspan: COLUMNS.length },
      h(
        'div',
        { class: 'controls' },
        h('span', { class: 'muted' }, `${n.id}:`),
        drainButton(s, n, act),
        ...faults.map(fault),
      ),
    ),
  );
  return [row, actions];
}

/** The heading, cards and nodes table of the cluster view. */
export function clusterView(s: StatsSnapshot, faults: readonly string[], act: Act): Node[] {
  const clustered = s.cluster.mode === 'cluster';
  const count = (state: string) => s.databases.filter((d) => d.state === state).length;
  const alive = s.cluster.nodes.filter((n) => n.alive).length;
  const cards: [string, string | number][] = [
    ['Databases', s.databases.length],
    ['Open', count('open')],
    ['Idle', count('idle')],
    ...(clustered ? ([['Remote', count('remote')]] as [string, number][]) : []),
    ['Clients', s.node.connectedClients],
    ['TPS', s.node.tps.toFixed(1)],
    ['Latency', `${s.node.latencyMs.toFixed(2)} ms`],
    ['Warm workers', s.node.warmWorkers],
    ...(clustered ? ([['Nodes alive', `${alive}/${s.cluster.nodes.length}`]] as [string, string][]) : []),
  ];
  const lease =
    s.cluster.leaseValid === false
      ? [h('p', { class: 'error' }, 'This node cannot prove its lease: it serves no database until it can.')]
      : [];
  return [
    h(
      'h2',
      { 'data-testid': 'cluster-mode' },
      clustered ? `Cluster · ${alive} of ${s.cluster.nodes.length} nodes alive` : 'Cluster (single-node)',
    ),
    ...lease,
    h(
      'div',
      { class: 'cards' },
      ...cards.map(([k, v]) =>
        h(
          'div',
          { class: 'card' },
          h('span', { class: 'muted' }, k),
          h('b', { 'data-testid': `card-${k.toLowerCase().replaceAll(' ', '-')}` }, v),
        ),
      ),
    ),
    h(
      'div',
      { class: 'scroll' },
      h(
        'table',
        { 'data-testid': 'nodes' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...[
              'Node',
              'State',
              'Open',
              'Owned',
              'Clients',
              'TPS',
              'Memory',
              'WAL backlog',
              'Heartbeat',
              '',
            ].map((t) => h('th', {}, t)),
          ),
        ),
        h('tbody', {}, ...s.cluster.nodes.flatMap((n) => nodeRows(s, n, faults, act))),
      ),
    ),
  ];
}

/**
 * Moving a database: offered on its owner's dashboard in cluster mode, to any other live node.
 * The owner ends its clients, ships its last WAL and hands it over; they reconnect to the target.
 */
export function moveControl(id: string, owner: string | null, s: StatsSnapshot | undefined, act: Act): Node {
  const disabled = (title: string) =>
    h('button', { disabled: true, title, 'data-testid': 'move-db' }, 'Move…');
  if (s?.cluster.mode !== 'cluster') return disabled('needs cluster mode');
  if (owner !== s.node.id) return disabled(`run the move on the dashboard of ${owner ?? 'its owner'}`);
  const targets = s.cluster.nodes.filter((n) => n.alive && !n.draining && n.id !== owner);
  if (targets.length === 0) return disabled('no other live node');
  const select = h(
    'select',
    { 'data-testid': 'move-target', 'aria-label': 'Move to node' },
    ...targets.map((n) => h('option', { value: n.id }, n.id)),
  );
  const button = h(
    'button',
    {
      class: 'danger',
      'data-testid': 'move-db',
      onclick: () =>
        void act(
          'Move',
          `Move database ${id} from ${owner} to ${select.value}? Its clients are disconnected and reconnect to ${select.value}.`,
          'POST',
          `/v1/databases/${encodeURIComponent(id)}/move`,
          { node: select.value },
        ),
    },
    'Move…',
  );
  return h('span', { class: 'controls' }, select, button);
}
