import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { type ClusterHarness, type HarnessNode, startClusterHarness } from '../helpers/cluster.js';
import { FAULT_ACTIONS } from '../helpers/fault-control-server.js';

/**
 * The dashboard and the stats API in cluster mode, with 2 real nodes of the fault harness: the
 * cluster view lists both nodes and each database's owner from the placements; a database moves
 * through the owner's admin API; and the harness's faults, reached through a node's admin API
 * (FAULT_CONTROL_URL) and through its dashboard in Chromium, pause and resume another node.
 */

const PASSWORD = 'dashboard-faults-1';
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-results/dashboard');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: ClusterHarness;

beforeAll(async () => {
  cluster = await startClusterHarness({
    size: 2,
    leaseTtl: '2s',
    env: { DURABILITY: 'async' },
    templateDir: inject('templateDir'),
  });
}, 240_000);

afterAll(async () => {
  await cluster?.close();
}, 60_000);

const node = (i: number) => cluster.nodes[i] as HarnessNode;

interface Snapshot {
  node: { id: string };
  cluster: {
    mode: string;
    leaseValid?: boolean;
    nodes: { id: string; self: boolean; alive: boolean; ownedDatabases: number; tps: number | null }[];
  };
  databases: { id: string; state: string; owner: string | null; memoryBytes: number | null }[];
}

const json = async <T>(n: HarnessNode, method: string, pathname: string, body?: unknown) => {
  const res = await n.request(method, pathname, body);
  return { status: res.status, body: (res.body ? JSON.parse(res.body) : undefined) as T };
};

/** Polls `/v1/stats` on `n` until `ok` accepts a snapshot (the cluster view is read once a second). */
async function statsUntil(n: HarnessNode, ok: (s: Snapshot) => boolean, ms = 15_000): Promise<Snapshot> {
  const deadline = Date.now() + ms;
  for (;;) {
    const { body } = await json<Snapshot>(n, 'GET', '/v1/stats');
    if (ok(body) || Date.now() > deadline) return body;
    await sleep(200);
  }
}

/** The process state letter from /proc (T: stopped by SIGSTOP). */
async function processState(pid: number | undefined): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] as string;
}

async function stateBecomes(n: HarnessNode, want: (s: string) => boolean): Promise<string> {
  let state = '';
  for (let i = 0; i < 100; i++) {
    state = await processState(n.pid);
    if (want(state)) break;
    await sleep(50);
  }
  return state;
}

describe('FAULT_CONTROL_URL', () => {
  it('accepts a loopback http URL only, and never in production', () => {
    expect(loadConfig({ FAULT_CONTROL_URL: 'http://127.0.0.1:9999/' }).faultControlUrl).toBe(
      'http://127.0.0.1:9999',
    );
    expect(loadConfig({ FAULT_CONTROL_URL: 'http://[::1]:9999' }).faultControlUrl).toBe('http://[::1]:9999');
    expect(loadConfig({}).faultControlUrl).toBeUndefined();
    for (const bad of ['http://10.0.0.1:9999', 'https://127.0.0.1:9999', 'http://u:p@localhost:1', 'nope'])
      expect(() => loadConfig({ FAULT_CONTROL_URL: bad }), bad).toThrow(ConfigError);
    expect(() => loadConfig({ FAULT_CONTROL_URL: 'http://127.0.0.1:9999', NODE_ENV: 'production' })).toThrow(
      /NODE_ENV=production/,
    );
  });
});

describe('cluster view, move and faults through the admin API', () => {
  it('lists every node and each database owner from the placements', async () => {
    await node(0).createDatabase('fdb', PASSWORD);
    const c = new pg.Client(node(0).pgConfig('fdb', PASSWORD));
    await c.connect();
    await c.query('create table t (n int); insert into t values (1)');
    await c.end();
    const owner = (await cluster.placement('fdb'))?.owner;
    expect(owner).toMatch(/^node-[12]$/);

    const snap = await statsUntil(node(0), (s) => s.databases.find((d) => d.id === 'fdb')?.owner === owner);
    expect(snap.cluster.mode).toBe('cluster');
    expect(snap.cluster.leaseValid).toBe(true);
    expect(snap.cluster.nodes.map((n) => [n.id, n.alive, n.self])).toEqual([
      ['node-1', true, true],
      ['node-2', true, false],
    ]);
    expect(snap.cluster.nodes.find((n) => n.id === owner)?.ownedDatabases).toBeGreaterThanOrEqual(1);
    // Another node's load is known on that node only.
    expect(snap.cluster.nodes.find((n) => !n.self)?.tps).toBeNull();
    const fdb = snap.databases.find((d) => d.id === 'fdb');
    expect(fdb?.owner).toBe(owner);
    expect(fdb?.state).toBe(owner === 'node-1' ? 'idle' : 'remote');
  });

  it('moves a database from its owner; other nodes answer 409', async () => {
    const ownerId = (await cluster.placement('fdb'))?.owner;
    const owner = cluster.nodes.find((n) => n.id === ownerId) as HarnessNode;
    const other = cluster.nodes.find((n) => n !== owner) as HarnessNode;
    expect((await other.request('POST', '/v1/databases/fdb/move', { node: other.id })).status).toBe(409);
    expect((await owner.request('POST', '/v1/databases/nope/move', { node: other.id })).status).toBe(404);
    const moved = await json<{ owner: string }>(owner, 'POST', '/v1/databases/fdb/move', { node: other.id });
    expect(moved.status).toBe(200);
    expect(moved.body.owner).toBe(other.id);
    expect((await cluster.placement('fdb'))?.owner).toBe(other.id);
    const snap = await statsUntil(
      node(0),
      (s) => s.databases.find((d) => d.id === 'fdb')?.owner === other.id,
    );
    expect(snap.databases.find((d) => d.id === 'fdb')?.owner).toBe(other.id);

    const c = new pg.Client(owner.pgConfig('fdb', PASSWORD));
    await c.connect();
    expect((await c.query('select count(*)::int as n from t')).rows).toEqual([{ n: 1 }]);
    await c.end();
    // A node drains itself: asking another node is refused.
    expect((await other.request('POST', `/v1/nodes/${owner.id}/drain`)).status).toBe(409);
  });

  it("runs the harness's faults through a node's admin API: pause, then resume another node", async () => {
    const [entry, target] = [node(0), node(1)];
    expect((await json<{ actions: string[] }>(entry, 'GET', '/v1/faults')).body.actions).toEqual([
      ...FAULT_ACTIONS,
    ]);
    expect((await entry.request('POST', '/v1/faults/explode?node=node-2')).status).toBe(404);
    expect((await entry.request('POST', '/v1/faults/pause?node=node-9')).status).toBe(404);

    expect((await entry.request('POST', `/v1/faults/pause?node=${target.id}`)).status).toBe(204);
    try {
      expect(await stateBecomes(target, (s) => s === 'T')).toBe('T');
    } finally {
      expect((await entry.request('POST', `/v1/faults/resume?node=${target.id}`)).status).toBe(204);
    }
    expect(await stateBecomes(target, (s) => s !== 'T')).not.toBe('T');
    expect((await target.request('GET', '/healthz', undefined, 10_000)).status).toBe(200);
    expect(cluster.control.log.slice(-2)).toEqual([`pause ${target.id}`, `resume ${target.id}`]);
  });

  it('isolates a node from everything: the others see it dead, then running again once healed', async () => {
    const [entry, target] = [node(0), node(1)];
    const stateOf = (s: Snapshot) =>
      (s.cluster.nodes.find((n) => n.id === target.id) as { state?: string } | undefined)?.state;
    expect((await entry.request('POST', `/v1/faults/isolate?node=${target.id}`)).status).toBe(204);
    try {
      // Its heartbeats cannot reach the catalog: dead once LEASE_TTL (2 s) passed without one.
      expect(stateOf(await statsUntil(entry, (s) => stateOf(s) === 'dead'))).toBe('dead');
    } finally {
      expect((await entry.request('POST', `/v1/faults/heal?node=${target.id}`)).status).toBe(204);
    }
    expect(stateOf(await statsUntil(entry, (s) => stateOf(s) === 'running', 30_000))).toBe('running');
  });
});

describe('dashboard in Chromium, cluster mode', () => {
  let profile: string | undefined;
  let context: BrowserContext | undefined;
  afterAll(async () => {
    await context?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it('shows both nodes and pauses and resumes a node after confirmation', async () => {
    profile = await mkdtemp(path.join(tmpdir(), 'gw-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 900 },
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    await page.goto(`http://127.0.0.1:${node(0).adminPort}/dashboard`);
    const target = node(1);
    const row = page.locator(`[data-testid=nodes] tr[data-node-actions="${target.id}"]`);
    await page.locator('[data-testid=nodes] tr[data-node="node-1"]').waitFor({ timeout: 15_000 });
    await row.waitFor();
    await page.locator('[data-testid=cluster-mode]').filter({ hasText: '2 of 2 nodes alive' }).waitFor();
    await page
      .locator('tr[data-db="fdb"] [data-testid=owner]')
      .filter({ hasText: /^node-\d$/ })
      .waitFor();

    await mkdir(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, 'cluster.png') });
    await row.locator('[data-testid=fault-pause]').click();
    await page.locator('[data-testid=confirm]').waitFor();
    await page.locator('[data-testid=confirm-ok]').click();
    await page
      .locator('[data-testid=notice]')
      .filter({ hasText: 'pause: done' })
      .waitFor({ timeout: 15_000 });
    try {
      expect(await stateBecomes(target, (s) => s === 'T')).toBe('T');
    } finally {
      await row.locator('[data-testid=fault-resume]').click();
      await page.locator('[data-testid=confirm-ok]').click();
      await page
        .locator('[data-testid=notice]')
        .filter({ hasText: 'resume: done' })
        .waitFor({ timeout: 15_000 });
    }
    expect(await stateBecomes(target, (s) => s !== 'T')).not.toBe('T');
    expect(problems).toEqual([]);
  });

  it("moves a database from its owner's dashboard after confirmation", async () => {
    const ownerId = (await cluster.placement('fdb'))?.owner;
    const owner = cluster.nodes.find((n) => n.id === ownerId) as HarnessNode;
    const other = cluster.nodes.find((n) => n !== owner) as HarnessNode;
    const page = await (context as BrowserContext).newPage();
    await page.goto(`http://127.0.0.1:${owner.adminPort}/dashboard`);
    await page.locator('tr[data-db="fdb"]').click();
    await page
      .locator('[data-testid=detail-owner]')
      .filter({ hasText: owner.id })
      .waitFor({ timeout: 15_000 });
    await page.locator('[data-testid=move-target]').selectOption(other.id);
    await page.locator('[data-testid=move-db]').click();
    await page
      .locator('[data-testid=confirm]')
      .filter({ hasText: `to ${other.id}` })
      .waitFor();
    await page.locator('[data-testid=confirm-ok]').click();
    await page.locator('[data-testid=notice]').filter({ hasText: 'Move: done' }).waitFor({ timeout: 30_000 });
    expect((await cluster.placement('fdb'))?.owner).toBe(other.id);
    // The table follows the placements: the database is now served elsewhere.
    await page
      .locator('tr[data-db="fdb"] [data-testid=owner]')
      .filter({ hasText: other.id })
      .waitFor({ timeout: 15_000 });
    await page.screenshot({ path: path.join(SHOTS, 'cluster-moved.png') });
    await page.close();
  });

  it('drains the node serving the page after confirmation (last: it stays draining)', async () => {
    const ownerId = (await cluster.placement('fdb'))?.owner;
    const owner = cluster.nodes.find((n) => n.id === ownerId) as HarnessNode;
    const other = cluster.nodes.find((n) => n !== owner) as HarnessNode;
    const page = await (context as BrowserContext).newPage();
    await page.goto(`http://127.0.0.1:${owner.adminPort}/dashboard`);
    const actions = (id: string) => page.locator(`[data-testid=nodes] tr[data-node-actions="${id}"]`);
    // Only the node serving the page offers its own drain.
    await actions(other.id).waitFor({ timeout: 15_000 });
    expect(await actions(other.id).locator('[data-testid=drain-node]').isDisabled()).toBe(true);
    await actions(owner.id).locator('[data-testid=drain-node]').click();
    await page
      .locator('[data-testid=confirm]')
      .filter({ hasText: `Drain node ${owner.id}?` })
      .waitFor();
    await page.locator('[data-testid=confirm-ok]').click();
    await page
      .locator('[data-testid=notice]')
      .filter({ hasText: /^Drain: done$/ })
      .waitFor({ timeout: 30_000 });
    expect((await cluster.placement('fdb'))?.owner).toBe(other.id);
    await page
      .locator(`[data-testid=nodes] tr[data-node="${owner.id}"][data-state=draining]`)
      .waitFor({ timeout: 15_000 });
    await page.close();
  });
});
