import { Pool } from '@neondatabase/serverless';
import { eq } from 'drizzle-orm';
import { drizzle as drizzleHttp } from 'drizzle-orm/neon-http';
import { drizzle as drizzleWs } from 'drizzle-orm/neon-serverless';
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { neon, neonUrl, useFrontDoor, useWebSocketFrontDoor } from '../helpers/neon.js';
import { startTestServer, type TestServer, withClient } from '../helpers/server.js';

const users = pgTable('users', {
  id: serial('id').primaryKey(),
  name: text('name').notNull(),
  credits: integer('credits').notNull().default(0),
});

/** Drizzle ORM through both Neon adapters: SQL over HTTP and the WebSocket Pool. */
describe('Drizzle with the Neon adapters', () => {
  let gw: TestServer;
  let url = '';

  beforeAll(async () => {
    gw = await startTestServer();
    const password = await gw.createDatabase('orm');
    url = neonUrl('orm', password);
    useFrontDoor(gw);
    useWebSocketFrontDoor(gw);
    await withClient(gw.pgConfig('orm', password), (c) =>
      c.query(
        'create table users (id serial primary key, name text not null, credits int not null default 0)',
      ),
    );
  });
  afterAll(() => gw?.close());

  it('drizzle-orm/neon-http: insert, select, transaction', async () => {
    const db = drizzleHttp({ client: neon(url) });
    const [ada] = await db.insert(users).values({ name: 'ada', credits: 5 }).returning();
    expect(ada).toMatchObject({ name: 'ada', credits: 5 });
    expect(await db.select().from(users).where(eq(users.name, 'ada'))).toEqual([ada]);
    const [, after] = await db.batch([
      db.update(users).set({ credits: 7 }).where(eq(users.name, 'ada')),
      db.select({ credits: users.credits }).from(users).where(eq(users.name, 'ada')),
    ]);
    expect(after).toEqual([{ credits: 7 }]);
  });

  it('drizzle-orm/neon-serverless: insert, select, transaction', async () => {
    const pool = new Pool({ connectionString: url });
    const db = drizzleWs({ client: pool });
    await db.insert(users).values({ name: 'bob', credits: 1 });
    await db.transaction(async (tx) => {
      await tx.update(users).set({ credits: 2 }).where(eq(users.name, 'bob'));
      await tx.insert(users).values({ name: 'cy' });
    });
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(users).values({ name: 'ghost' });
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    const names = await db.select({ name: users.name, credits: users.credits }).from(users).orderBy(users.id);
    expect(names.filter((u) => u.name !== 'ada')).toEqual([
      { name: 'bob', credits: 2 },
      { name: 'cy', credits: 0 },
    ]);
    await pool.end();
  });
});
