import { ago, formatBytes, h } from './dom.js';
import type { DatabaseStats } from './types.js';

/**
 * The database table: filter by id and state, sort by any column, 50 rows a page. Only the page
 * on screen is rendered, so thousands of databases cost a sort and a filter per update.
 */

type Key = keyof DatabaseStats;
const PAGE = 50;
const COLUMNS: [Key, string][] = [
  ['id', 'Database'],
  ['state', 'State'],
  ['clients', 'Clients'],
  ['waiting', 'Waiting'],
  ['tps', 'TPS'],
  ['queries', 'Queries'],
  ['memoryBytes', 'Memory'],
  ['lastSnapshotAt', 'Last snapshot'],
  ['owner', 'Node'],
];

export class DatabaseTable {
  readonly element: HTMLElement;
  private rows: DatabaseStats[] = [];
  private filter = '';
  private state = '';
  private sortKey: Key = 'id';
  private descending = false;
  private page = 0;
  private selected: string | undefined;
  private readonly body = h('tbody', { 'data-testid': 'db-rows' });
  private readonly head = h('tr');
  private readonly pager = h('span', { 'data-testid': 'pager', class: 'muted' });
  private readonly prev = h('button', { onclick: () => this.turn(-1), 'data-testid': 'prev' }, '‹ Prev');
  private readonly next = h('button', { onclick: () => this.turn(1), 'data-testid': 'next' }, 'Next ›');

  constructor(private readonly onSelect: (id: string) => void) {
    const filter = h('input', {
      type: 'search',
      placeholder: 'Filter by id',
      'data-testid': 'filter',
      'aria-label': 'Filter databases by id',
    });
    filter.addEventListener('input', () => {
      this.filter = filter.value.trim().toLowerCase();
      this.page = 0;
      this.render();
    });
    const state = h(
      'select',
      { 'data-testid': 'state-filter', 'aria-label': 'Filter by state' },
      ...['', 'open', 'idle', 'opening', 'closed', 'remote'].map((s) =>
        h('option', { value: s }, s || 'any state'),
      ),
    );
    state.addEventListener('change', () => {
      this.state = state.value;
      this.page = 0;
      this.render();
    });
    for (const [key, label] of COLUMNS) {
      const th = h('th', { 'data-sort': key, scope: 'col' }, label);
      th.addEventListener('click', () => {
        this.descending = this.sortKey === key ? !this.descending : key !== 'id' && key !== 'state';
        this.sortKey = key;
        this.render();
      });
      this.head.append(th);
    }
    this.element = h(
      'section',
      {},
      h('h2', {}, 'Databases'),
      h('div', { class: 'controls' }, filter, state, this.prev, this.next, this.pager),
      h('table', { 'data-testid': 'db-table' }, h('thead', {}, this.head), this.body),
    );
  }

  update(rows: DatabaseStats[]): void {
    this.rows = rows;
    this.render();
  }

  select(id: string | undefined): void {
    this.selected = id;
    this.render();
  }

  private turn(delta: number): void {
    this.page += delta;
    this.render();
  }

  private visible(): DatabaseStats[] {
    const { filter, state, sortKey, descending } = this;
    const rows = this.rows.filter((r) => (!filter || r.id.includes(filter)) && (!state || r.state === state));
    const sign = descending ? -1 : 1;
    return rows.sort((a, b) => {
      const x = a[sortKey] ?? '';
      const y = b[sortKey] ?? '';
      return (x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : 1) * sign;
    });
  }

  private render(): void {
    const rows = this.visible();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    this.page = Math.min(Math.max(0, this.page), pages - 1);
    this.pager.textContent = `${rows.length} of ${this.rows.length} · page ${this.page + 1}/${pages}`;
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
    for (const th of this.head.children) {
      const key = th.getAttribute('data-sort');
      if (key === this.sortKey) th.setAttribute('aria-sort', this.descending ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    const slice = rows.slice(this.page * PAGE, (this.page + 1) * PAGE);
    this.body.replaceChildren(
      ...slice.map((r) =>
        h(
          'tr',
          {
            class: r.id === this.selected ? 'db selected' : 'db',
            'data-db': r.id,
            onclick: () => this.onSelect(r.id),
          },
          h('td', {}, r.id),
          h('td', { class: `state-${r.state}`, 'data-testid': 'state' }, r.state),
          h('td', { 'data-testid': 'clients' }, r.clients),
          h('td', {}, r.waiting),
          h('td', {}, r.tps.toFixed(1)),
          h('td', {}, r.queries),
          h('td', { 'data-testid': 'memory' }, r.memoryBytes === null ? '—' : formatBytes(r.memoryBytes)),
          h('td', {}, ago(r.lastSnapshotAt)),
          h('td', { 'data-testid': 'owner' }, r.owner ?? '—'),
        ),
      ),
    );
  }
}
