import { readFile, writeFile } from 'node:fs/promises';
import type { DbOps } from './admin-client.js';

/**
 * The `template` commands and `db types` (issue 18). `template migrate --all` migrates one database
 * per request, so each outcome is printed as it comes (the progress).
 */

export class TemplateUsageError extends Error {}

type Values = Record<string, unknown>;

async function sqlOf(values: Values, command: string): Promise<string> {
  const file = values.sql;
  if (typeof file !== 'string') throw new TemplateUsageError(`${command} needs --sql FILE`);
  return readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot read ${file}: ${err.code ?? err.message}`);
  });
}

async function output(text: string, out: unknown): Promise<void> {
  if (typeof out === 'string') {
    await writeFile(out, text);
    console.error(`wrote ${out}`);
  } else process.stdout.write(text);
}

export async function runTemplateCommand(
  command: string,
  values: Values,
  positionals: string[],
  ops: DbOps,
): Promise<void> {
  const [name] = positionals as [string];
  switch (command) {
    case 'template create': {
      const created = await ops.createTemplate(name, await sqlOf(values, command));
      console.log(`created template "${created.name}" (version ${created.version})`);
      break;
    }
    case 'template list': {
      const list = await ops.listTemplates();
      if (list.length === 0) console.log('no templates');
      const widths = [Math.max(4, ...list.map((t) => t.name.length)), 7, 9];
      if (list.length > 0)
        console.log(
          ['NAME', 'VERSION', 'DATABASES', 'UPDATED'].map((h, i) => h.padEnd(widths[i] ?? 0)).join('  '),
        );
      for (const t of list)
        console.log(
          [t.name, String(t.version), String(t.databases), t.updatedAt]
            .map((c, i) => c.padEnd(widths[i] ?? 0))
            .join('  '),
        );
      break;
    }
    case 'template delete':
      await ops.deleteTemplate(name);
      console.log(`deleted template "${name}"`);
      break;
    case 'template update': {
      const updated = await ops.updateTemplate(name, await sqlOf(values, command));
      console.log(
        `template "${updated.name}" is at version ${updated.version}; its databases migrate when they next open`,
      );
      break;
    }
    case 'template migrate': {
      if (values.all !== true) throw new TemplateUsageError('template migrate needs --all');
      const databases = (await ops.list()).filter((d) => d.template === name);
      let failed = 0;
      for (const [i, db] of databases.entries()) {
        const r = await ops.migrate(db.id);
        if (r.outcome === 'failed') failed++;
        const what =
          r.outcome === 'failed'
            ? `failed, stays at version ${r.version}: ${r.error}`
            : `${r.outcome}, version ${r.version}`;
        console.log(`[${i + 1}/${databases.length}] ${r.id}: ${what}`);
      }
      console.log(`${databases.length - failed} of ${databases.length} database(s) at the newest version`);
      if (failed > 0) throw new Error(`${failed} database(s) could not be migrated`);
      break;
    }
    case 'template types':
      await output(await ops.templateTypes(name), values.out);
      break;
    case 'db types':
      await output(await ops.types(name), values.out);
      break;
    default:
      throw new Error(`not a template command: ${command}`);
  }
}
