import type { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import type { DatabaseManager } from '../admin/service.js';
import { MAX_TEMPLATE_SQL_BYTES, type TemplateManager } from '../admin/templates.js';
import { templateJson } from '../admin/views.js';
import { parseBody } from './body.js';
import type { AdminEnv } from './env.js';

/**
 * Admin routes of templates (issue 18) and the TypeScript types of databases and templates.
 * Registered on the app before /v1, so template SQL may be larger than /v1's JSON body limit.
 */

const CreateTemplateBody = z.strictObject({ name: z.string(), sql: z.string() });
const UpdateTemplateBody = z.strictObject({ sql: z.string() });

const TYPESCRIPT = { 'Content-Type': 'application/typescript; charset=utf-8' };

export function registerTemplateRoutes(
  app: Hono<AdminEnv>,
  deps: { manager: DatabaseManager; templates: TemplateManager },
): void {
  const { manager, templates } = deps;
  // JSON-escaped SQL may grow by a few bytes per character; the SQL itself is checked exactly.
  const limit = bodyLimit({
    maxSize: MAX_TEMPLATE_SQL_BYTES * 2 + 4096,
    onError: (c) => c.json({ error: 'request body too large' }, 413),
  });

  app.get('/v1/templates', async (c) => c.json({ templates: (await templates.list()).map(templateJson) }));

  app.post('/v1/templates', limit, async (c) => {
    const { name, sql } = await parseBody(c.req, CreateTemplateBody);
    return c.json(templateJson(await templates.create(name, sql)), 201);
  });

  app.get('/v1/templates/:name', async (c) => c.json(templateJson(await templates.get(c.req.param('name')))));

  app.delete('/v1/templates/:name', async (c) => {
    await templates.delete(c.req.param('name'));
    return c.body(null, 204);
  });

  app.post('/v1/templates/:name/versions', limit, async (c) => {
    const { sql } = await parseBody(c.req, UpdateTemplateBody);
    return c.json(templateJson(await templates.update(c.req.param('name'), sql)));
  });

  // Every database made from the template, one at a time; the answer lists each outcome.
  app.post('/v1/templates/:name/migrate', async (c) =>
    c.json({ results: await templates.migrateAll(c.req.param('name')) }),
  );

  // The module as such (.ts), or wrapped in JSON for clients that only read JSON (the CLI).
  app.get('/v1/templates/:name/types.ts', async (c) =>
    c.body(await templates.types(c.req.param('name')), 200, TYPESCRIPT),
  );
  app.get('/v1/templates/:name/types', async (c) =>
    c.json({ typescript: await templates.types(c.req.param('name')) }),
  );
  app.get('/v1/databases/:id/types.ts', async (c) =>
    c.body(await manager.types(c.req.param('id')), 200, TYPESCRIPT),
  );
  app.get('/v1/databases/:id/types', async (c) =>
    c.json({ typescript: await manager.types(c.req.param('id')) }),
  );

  app.post('/v1/databases/:id/migrate', async (c) => c.json(await manager.migrate(c.req.param('id'))));
}
