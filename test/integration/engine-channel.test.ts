import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { REPLY_BYTES, REQUEST_BYTES } from '../../src/engine/channel.js';
import { type Engine, EngineKilledError, postgresSettings } from '../../src/engine/engine.js';
import { EngineHost } from '../../src/engine/engine-host.js';
import { createFromTemplate } from '../../src/pgdata/template.js';
import { firstRow, hasError } from '../../src/wire/backend-scan.js';
import { query } from '../../src/wire/protocol.js';

/**
 * Issue 17: requests and replies cross between the gateway and a database worker through shared
 * memory when they fit (engine/channel.ts), by postMessage when they do not. Every mix of the two
 * must keep each reply with its request, in order, with real workers.
 */
let root: string;
let host: EngineHost;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'engine-channel-'));
  host = new EngineHost({ warm: 0, settings: postgresSettings(2 * 1024 * 1024), fsync: false });
  await host.start();
});
afterAll(async () => {
  await host?.close();
  await rm(root, { recursive: true, force: true });
});

async function open(name: string): Promise<Engine> {
  const dir = path.join(root, name);
  await createFromTemplate(inject('templateDir'), dir);
  return host.open(dir, { readOnly: false });
}

async function value(engine: Engine, text: string): Promise<string | null | undefined> {
  const response = await engine.exec(query(text));
  expect(hasError(response), text).toBe(false);
  return firstRow(response)?.[0];
}

describe('the channel to a database worker', () => {
  it('keeps replies with their requests when small and large ones alternate', async () => {
    const engine = await open('alternate');
    try {
      // A reply larger than the slot is posted; the request right after it goes through the slot.
      const big = Math.ceil((REPLY_BYTES * 2) / 1000);
      for (let i = 0; i < 20; i++) {
        expect(await value(engine, `select ${i}`)).toBe(String(i));
        const large = await engine.exec(query(`select repeat('x', 1000) from generate_series(1, ${big})`));
        expect(large.length).toBeGreaterThan(REPLY_BYTES);
        expect(hasError(large)).toBe(false);
        expect(await value(engine, `select ${i} + 1000`)).toBe(String(i + 1000));
      }
      // A request larger than the slot is posted too.
      const padding = 'x'.repeat(REQUEST_BYTES);
      expect(await value(engine, `select length('${padding}')`)).toBe(String(REQUEST_BYTES));
      expect(await value(engine, 'select 42')).toBe('42');
    } finally {
      await engine.close();
    }
  });

  it('answers requests made at the same time one after another, each with its own reply', async () => {
    const engine = await open('concurrent');
    try {
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) => value(engine, `select ${i} * 2`)),
      );
      expect(answers).toEqual(Array.from({ length: 30 }, (_, i) => String(i * 2)));
    } finally {
      await engine.close();
    }
  });

  it('a kill ends a running statement that came through the slot', async () => {
    const engine = await open('kill');
    const running = engine.exec(query('select pg_sleep(30)')).then(
      () => 'answered',
      (err: unknown) => err,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    await engine.kill();
    expect(await running).toBeInstanceOf(EngineKilledError);
  });

  it('a worker parked again after a close serves the next database through the slot', async () => {
    const reuse = new EngineHost({ warm: 1, settings: postgresSettings(2 * 1024 * 1024), fsync: false });
    await reuse.start();
    try {
      for (const name of ['reuse-a', 'reuse-b', 'reuse-c']) {
        const dir = path.join(root, name);
        await createFromTemplate(inject('templateDir'), dir);
        const engine = await reuse.open(dir, { readOnly: false });
        expect(await value(engine, `select '${name}'`)).toBe(name);
        await engine.close();
      }
      expect(reuse.stats.recycled).toBeGreaterThan(0);
    } finally {
      await reuse.close();
    }
  });
});
