import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createScramSha256Data } from 'pg-gateway';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { runPgbench } from '../helpers/pgbench.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The dashboard in a real headless Chromium (Debian's package, driven by playwright-core; nothing
 * downloads a browser): sign-in, no console errors, a database created by the CLI shows up through
 * the live stream, client counts move while pgbench runs, 1,000 databases sort and filter, and the
 * close action takes effect. Screenshots go to test-results/dashboard/ (git-ignored).
 */

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'dashboard-test-token';
const SHOTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-results/dashboard');
const BULK = 1000;

let t: TestServer;
let profile: string;
let context: BrowserContext;
let page: Page;
let base: string;
const problems: string[] = [];
let hotPassword: string;

beforeAll(async () => {
  t = await startTestServer({ ADMIN_TOKEN: TOKEN });
  base = `http://127.0.0.1:${t.server.adminPort}`;
  hotPassword = await t.createDatabase('hot');
  // 1,000 more databases: catalog rows are enough for the table (they are never opened here).
  const scram = await createScramSha256Data('a-password-long-enough');
  for (let i = 0; i < BULK; i++) {
    await t.server.catalog.createDatabase({
      id: `bulk${String(i).padStart(4, '0')}`,
      username: 'postgres',
      scram,
    });
  }
  await mkdir(SHOTS, { recursive: true });
  profile = await mkdtemp(path.join(tmpdir(), 'gw-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  await context?.close();
  await t?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

/** A row of the database table. */
const row = (id: string) => page.locator(`tr[data-db="${id}"]`);

describe('dashboard in Chromium', () => {
  it('asks for the token, then signs in through ?token= and loads without console errors', async () => {
    const signIn = await context.newPage();
    const res = await signIn.goto(`${base}/dashboard`);
    expect(res?.status()).toBe(401);
    await expect(signIn.locator('input[name=token]').count()).resolves.toBe(1);
    await signIn.screenshot({ path: path.join(SHOTS, 'sign-in.png') });
    await signIn.close();

    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    await page.goto(`${base}/dashboard?token=${TOKEN}`);
    expect(page.url()).toBe(`${base}/dashboard`);
    await row('bulk0000').waitFor({ timeout: 15_000 });
    await page
      .locator('[data-testid=pager]')
      .filter({ hasText: `of ${BULK + 1}` })
      .waitFor({ timeout: 15_000 });
    expect(problems).toEqual([]);
  });

  it('shows a database created through the CLI within 2 s, via the stream', async () => {
    const created = await runCli(t.env, 'db', 'create', 'fromcli');
    expect(created.code, created.stderr).toBe(0);
    await page.locator('[data-testid=filter]').fill('fromcli');
    await row('fromcli').waitFor({ timeout: 2000 });
    await page.locator('[data-testid=filter]').fill('');
  });

  it('updates client counts while pgbench runs', { timeout: 180_000 }, async () => {
    const conninfo = [
      'host=hot.db.example.com',
      'hostaddr=127.0.0.1',
      `port=${t.port}`,
      'user=postgres',
      'dbname=postgres',
      'sslmode=verify-full',
      `sslrootcert=${t.caPath}`,
    ].join(' ');
    const env = { PGPASSWORD: hotPassword };
    const init = await runPgbench(['-i', '-s', '1', conninfo], { env, timeoutMs: 150_000 });
    expect(init.code, init.stderr).toBe(0);
    await page.locator('[data-testid=filter]').fill('hot');
    const bench = runPgbench(['-n', '-c', '4', '-j', '2', '-T', '8', conninfo], { env, timeoutMs: 60_000 });
    // The clients cell reads 4 while pgbench's four connections are in.
    await row('hot').locator('[data-testid=clients]').filter({ hasText: /^4$/ }).waitFor({ timeout: 20_000 });
    await page.screenshot({ path: path.join(SHOTS, 'pgbench.png') });
    const result = await bench;
    expect(result.code, result.stderr).toBe(0);
    await row('hot').locator('[data-testid=clients]').filter({ hasText: /^0$/ }).waitFor({ timeout: 20_000 });
    await page.locator('[data-testid=filter]').fill('');
  });

  it('sorts and filters 1,000 databases', async () => {
    const firstId = () => page.locator('[data-testid=db-rows] tr').first().getAttribute('data-db');
    const header = page.locator('th[data-sort=id]');
    expect(await firstId()).toBe('bulk0000');
    await header.click(); // id, descending
    expect(await header.getAttribute('aria-sort')).toBe('descending');
    expect(await firstId()).toBe('hot');
    await header.click();
    expect(await firstId()).toBe('bulk0000');
    await page.locator('[data-testid=filter]').fill('bulk09');
    await page
      .locator('[data-testid=pager]')
      .filter({ hasText: /^100 of 1002/ })
      .waitFor();
    expect(await page.locator('[data-testid=db-rows] tr').count()).toBe(50);
    await page.locator('[data-testid=next]').click();
    expect(await firstId()).toBe('bulk0950');
    await page.locator('[data-testid=filter]').fill('');
    await page.locator('[data-testid=state-filter]').selectOption('idle');
    await page
      .locator('[data-testid=pager]')
      .filter({ hasText: /^1 of 1002/ })
      .waitFor();
    expect(await firstId()).toBe('hot');
    await page.locator('th[data-sort=queries]').click(); // busiest first
    await page.locator('[data-testid=state-filter]').selectOption('');
    expect(await firstId()).toBe('hot');
    await page.screenshot({ path: path.join(SHOTS, 'databases.png') });
  });

  it('closes a database from its detail, after confirmation', async () => {
    await row('hot').click();
    await page.locator('[data-testid=detail-state]').filter({ hasText: 'idle' }).waitFor();
    await page.locator('[data-testid=connection-string]').filter({ hasText: 'hot.db.example.com' }).waitFor();
    await page.locator('[data-testid=close-db]').click();
    await page.locator('[data-testid=confirm]').waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'confirm-close.png') });
    await page.locator('[data-testid=confirm-ok]').click();
    await row('hot')
      .locator('[data-testid=state]')
      .filter({ hasText: 'closed' })
      .waitFor({ timeout: 10_000 });
    expect(t.server.registry.openCount).toBe(0);
    // The detail and the events follow the stream too.
    await page
      .locator('[data-testid=detail-state]')
      .filter({ hasText: 'closed' })
      .waitFor({ timeout: 10_000 });
    await page
      .locator('[data-testid=events] li')
      .filter({ hasText: 'close hot · admin' })
      .waitFor({ timeout: 10_000 });
    await page.screenshot({ path: path.join(SHOTS, 'dashboard.png') });
    expect(problems).toEqual([]);
  });
});
