#!/usr/bin/env node
import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { CreatedDatabaseJson, PasswordJson, UploadedJson } from '../admin/views.js';
import { type Config, loadConfig } from '../config.js';
import { errors } from '../errors.js';
import { isValidDatabaseId } from '../ids.js';
import { DataDirLockedError, readLockHolder } from '../pgdata/dir-lock.js';
import { type DbOps, type Progress, remoteOps } from './admin-client.js';
import { runClusterCommand } from './cluster.js';
import { runTemplateCommand, TemplateUsageError } from './templates.js';
import { COMMAND_HELP, COMMANDS, type Command, HELP_OPTION, USAGE } from './usage.js';

/**
 * `pglite-gateway <command>`. Configuration comes from the environment only (see config.ts).
 * Exit codes: 0 ok, 1 failure (`error: <message>`), 2 usage (also with no arguments: the usage goes
 * to stderr). `--help` after any command shows its options. Heavy modules (the server, PGlite,
 * certificate generation) are imported only by the commands that need them.
 */

class UsageError extends Error {}

interface Parsed {
  /** `help`: the usage (or `topic`'s help) on stdout; `usage`: no arguments, the usage on stderr. */
  command: Command | 'help' | 'usage';
  topic?: Command;
  values: Record<string, unknown>;
  positionals: string[];
}

function parseCommandLine(argv: string[]): Parsed {
  const [first, second] = argv;
  if (first === undefined) return { command: 'usage', values: {}, positionals: [] };
  if (first === '-h' || first === '--help') return { command: 'help', values: {}, positionals: [] };
  const grouped = first === 'db' || first === 'template' || first === 'node';
  const name = grouped ? `${first} ${second ?? ''}` : first;
  if (grouped && (second === '-h' || second === '--help')) {
    return { command: 'help', values: {}, positionals: [] };
  }
  if (!Object.hasOwn(COMMANDS, name)) {
    if (first === 'template')
      throw new UsageError(
        `${second ? `unknown template command "${second}"` : 'template needs a command'}: create, list, delete, update, migrate, types`,
      );
    if (first === 'node')
      throw new UsageError(`${second ? `unknown node command "${second}"` : 'node needs a command'}: drain`);
    if (first !== 'db') throw new UsageError(`unknown command "${first}"`);
    throw new UsageError(
      `${second ? `unknown db command "${second}"` : 'db needs a command'}: ` +
        'create, list, delete, set, passwd, versions, restore, clone, types, move',
    );
  }
  const command = name as Command;
  const spec = COMMANDS[command];
  const options = { ...HELP_OPTION, ...spec.options };
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv.slice(grouped ? 2 : 1),
      options,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.values.help) return { command: 'help', topic: command, values: {}, positionals: [] };
  const required = spec.args.filter((a: string) => !a.endsWith('?')).length;
  if (parsed.positionals.length < required || parsed.positionals.length > spec.args.length) {
    const expected = spec.args
      .map((a: string) => (a.endsWith('?') ? `[${a.slice(0, -1)}]` : `<${a}>`))
      .join(' ');
    throw new UsageError(`${name} takes ${expected || 'no arguments'}`);
  }
  return { command, values: parsed.values, positionals: parsed.positionals };
}

/** `--at`: an ISO 8601 time with its zone, passed on as such. */
function pointInTime(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!/(Z|[+-]\d\d:?\d\d)$/i.test(value) || Number.isNaN(Date.parse(value))) {
    throw new UsageError(
      `--at takes an ISO 8601 time with its zone, e.g. 2026-11-30T21:05:00Z (got ${value})`,
    );
  }
  return new Date(value).toISOString();
}

/** Remote when a live server holds the data directory, local otherwise (never both). */
async function openOps(config: Config): Promise<DbOps> {
  const holder = await readLockHolder(config.dataDir);
  if (holder) return remoteOps(config.admin.socketPath, holder.pid);
  try {
    const { openLocalOps } = await import('./local-ops.js');
    return await openLocalOps(config);
  } catch (err) {
    // A server started between the check and the lock: use it.
    if (err instanceof DataDirLockedError) return remoteOps(config.admin.socketPath, err.pid);
    throw err;
  }
}

function printConnection(info: CreatedDatabaseJson | PasswordJson | UploadedJson, note?: string): void {
  console.log(`user:      ${info.username}`);
  if (info.password === undefined) console.log('password:  (unchanged)');
  else console.log(`password:  ${info.password}   (shown once; only a SCRAM verifier is stored)`);
  console.log('');
  console.log('connection string:');
  console.log(`  ${info.connectionString}`);
  console.log('psql:');
  console.log(`  ${info.psql}`);
  if (note) console.error(note);
}

function printTable(rows: string[][]): void {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  for (const row of rows)
    console.log(
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    );
}

function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 'B';
  for (const u of units) {
    if (value < 1000) break;
    value /= 1000;
    unit = u;
  }
  return `${value.toFixed(1)} ${unit}`;
}

/**
 * Upload progress on stderr: on a terminal one line rewritten at most 5 times a second, otherwise
 * a line at most every 2 s. The last line (everything sent) is always printed.
 */
function progressReporter(): { progress: Progress; done(): void } {
  const tty = process.stderr.isTTY === true;
  const interval = tty ? 200 : 2000;
  let last = 0;
  let shown = false;
  return {
    progress: (sent, total) => {
      const now = Date.now();
      if (sent < total && now - last < interval) return;
      last = now;
      const pct = total > 0 ? Math.floor((sent / total) * 100) : 100;
      const line = `sent ${formatBytes(sent)} / ${formatBytes(total)} (${pct}%)`;
      process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
      shown = true;
    },
    done: () => {
      if (shown && tty) process.stderr.write('\n');
    },
  };
}

async function runDb(command: Command, values: Parsed['values'], positionals: string[]): Promise<void> {
  const [id, second] = positionals;
  const ids =
    command.startsWith('template ') || command === 'node drain'
      ? []
      : command === 'db clone'
        ? [id, second]
        : [id];
  for (const each of ids) {
    if (each !== undefined && !isValidDatabaseId(each)) {
      throw new Error(`invalid database id "${each}": ${errors.invalidDatabaseId().hint}`);
    }
  }
  if (command === 'upload') {
    const info = await stat(second as string).catch(() => undefined);
    if (!info?.isFile()) throw new Error(`${second} is not a readable file`);
  }
  const str = (k: string) => values[k] as string | undefined;
  const creds = {
    ...(str('user') !== undefined ? { username: str('user') } : {}),
    ...(str('password') !== undefined ? { password: str('password') } : {}),
  };
  const ops = await openOps(loadConfig());
  try {
    if (command === 'db move' || command === 'node drain') {
      await runClusterCommand(command, positionals, ops);
      return;
    }
    if (command.startsWith('template ') || command === 'db types') {
      await runTemplateCommand(command, values, positionals, ops).catch((err: unknown) => {
        throw err instanceof TemplateUsageError ? new UsageError(err.message) : err;
      });
      return;
    }
    switch (command) {
      case 'db create': {
        const role = roleOption(values.role);
        const created = await ops.create(id as string, {
          readOnly: values['read-only'] === true,
          ...(str('template') !== undefined ? { template: str('template') as string } : {}),
          ...(role ? { roleMode: role } : {}),
          ...creds,
        });
        console.log(`created database "${created.id}"${created.readOnly ? ' (read-only)' : ''}`);
        printConnection(created, ops.connectionNote);
        break;
      }
      case 'db list': {
        const list = await ops.list();
        if (list.length === 0) console.log('no databases');
        else
          printTable(
            // Template columns only once a database was made from one (issue 18).
            list.some((d) => d.template)
              ? [
                  ['ID', 'READ-ONLY', 'CREATED', 'ROLE', 'TEMPLATE', 'MIGRATION'],
                  ...list.map((d) => [
                    d.id,
                    d.readOnly ? 'yes' : 'no',
                    d.createdAt,
                    d.roleMode ?? 'owner',
                    d.template ? `${d.template} v${d.templateVersion ?? 0}` : '-',
                    d.migrationError ? `failed: ${d.migrationError}` : '-',
                  ]),
                ]
              : [
                  ['ID', 'READ-ONLY', 'CREATED'],
                  ...list.map((d) => [d.id, d.readOnly ? 'yes' : 'no', d.createdAt]),
                ],
          );
        break;
      }
      case 'db delete':
        await ops.delete(id as string);
        console.log(`deleted database "${id}"`);
        break;
      case 'db set': {
        const patch = dbSetPatch(values);
        const updated = await ops.update(id as string, patch);
        const mode = updated.poolMode ?? 'server default';
        console.log(
          `database "${updated.id}": ${updated.readOnly ? 'read-only' : 'writable'}, pool mode ${mode}`,
        );
        break;
      }
      case 'db passwd': {
        const changed = await ops.passwd(id as string, creds);
        console.log(`new password for user "${changed.username}" of database "${id}"`);
        printConnection(changed, ops.connectionNote);
        break;
      }
      case 'db versions': {
        const versions = await ops.versions(id as string);
        if (versions.length === 0) console.log(`database "${id}" has no archived versions`);
        else
          printTable([
            ['VERSION', 'SIZE', 'CREATED'],
            ...versions.map((v) => [v.version, formatBytes(v.sizeBytes), v.createdAt]),
          ]);
        const range = await ops.restorable(id as string);
        if (range) console.log(`restorable (--at): ${range.earliest} to ${range.latest}`);
        break;
      }
      case 'db restore': {
        const at = pointInTime(str('at'));
        if ((second === undefined) === (at === undefined)) {
          throw new UsageError('db restore takes a <version> or --at <time>, one of the two');
        }
        const restored = await ops.restore(id as string, second, at);
        console.log(
          `restored database "${id}" to version ${restored.restoredFrom} (now version ${restored.version.version})`,
        );
        break;
      }
      case 'db clone': {
        const version = str('version');
        const at = pointInTime(str('at'));
        const cloned = await ops.clone(id as string, second as string, {
          ...(version !== undefined ? { version } : {}),
          ...(at !== undefined ? { at } : {}),
          ...creds,
        });
        console.log(
          `created database "${cloned.id}" from "${cloned.source}"` +
            `${version !== undefined ? ` version ${version}` : ''} (version ${cloned.version.version})`,
        );
        printConnection(cloned, ops.connectionNote);
        break;
      }
      case 'upload': {
        const reporter = progressReporter();
        let uploaded: UploadedJson;
        try {
          uploaded = await ops.upload(
            id as string,
            second as string,
            {
              create: values.create === true,
              ...(creds.username !== undefined ? { username: creds.username } : {}),
            },
            reporter.progress,
          );
        } finally {
          reporter.done();
        }
        const stored = uploaded.version
          ? ` as version ${uploaded.version.version}`
          : ' (no archive: local only)';
        console.log(
          `${uploaded.created ? 'created' : 'replaced'} database "${uploaded.id}" from ${second}${stored}`,
        );
        printConnection(uploaded, ops.connectionNote);
        break;
      }
      default:
        throw new Error(`not a db command: ${command}`);
    }
  } finally {
    await ops.close();
  }
}

function dbSetPatch(values: Parsed['values']) {
  if (values['read-only'] && values.writable)
    throw new UsageError('--read-only and --writable exclude each other');
  const patch: {
    readOnly?: boolean;
    poolMode?: 'session' | 'transaction' | null;
    roleMode?: 'owner' | 'writer';
  } = {};
  const role = roleOption(values.role);
  if (role) patch.roleMode = role;
  if (values['read-only']) patch.readOnly = true;
  if (values.writable) patch.readOnly = false;
  const mode = values['pool-mode'];
  if (mode !== undefined) {
    if (mode !== 'session' && mode !== 'transaction' && mode !== 'default') {
      throw new UsageError('--pool-mode takes session, transaction or default');
    }
    patch.poolMode = mode === 'default' ? null : mode;
  }
  if (Object.keys(patch).length === 0)
    throw new UsageError('db set needs --read-only, --writable, --pool-mode or --role');
  return patch;
}

/** `--role`: who a writable database's clients are (issue 18). */
function roleOption(value: unknown): 'owner' | 'writer' | undefined {
  if (value === undefined) return undefined;
  if (value !== 'owner' && value !== 'writer') throw new UsageError('--role takes owner or writer');
  return value;
}

async function runCerts(force: boolean): Promise<void> {
  const config = loadConfig();
  const { generateDevCertificates } = await import('../gateway/certs.js');
  const result = await generateDevCertificates({ dir: config.tls.dir, domain: config.wildcardDomain, force });
  if (!result.generated) console.log(`certificates already exist (use --force to re-issue):`);
  else
    console.log(
      `generated certificates for *.${config.wildcardDomain}${result.reusedCa ? ' (kept the CA)' : ''}:`,
    );
  console.log(`  CA:          ${result.caPath}   (give this to clients: sslrootcert=...)`);
  console.log(`  certificate: ${result.certPath}`);
  console.log(`  key:         ${result.keyPath}`);
}

async function main(argv: string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    console.error(`error: ${(err as Error).message}\nrun with --help for usage`);
    return 2;
  }
  const { command, values, positionals } = parsed;
  if (command === 'usage') {
    console.error(USAGE);
    return 2;
  }
  try {
    if (command === 'help') console.log(parsed.topic ? COMMAND_HELP[parsed.topic] : USAGE);
    else if (command === 'serve') await (await import('../main.js')).serve();
    else if (command === 'certs') await runCerts(values.force === true);
    else await runDb(command, values, positionals);
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return err instanceof UsageError ? 2 : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
