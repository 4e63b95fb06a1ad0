#!/usr/bin/env node
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { type Config, loadConfig } from '../config.js';
import { DataDirLockedError, readLockHolder } from '../databases/dir-lock.js';
import { errors } from '../errors.js';
import { isValidDatabaseId } from '../gateway/routing.js';
import type { CreatedDatabaseJson, PasswordJson } from '../http/app.js';
import { type DbOps, remoteOps } from './admin-client.js';

/**
 * `pglite-gateway <command>`. Configuration comes from the environment only (see config.ts).
 * Exit codes: 0 ok, 1 failure (`error: <message>`), 2 usage. Heavy modules (the server, PGlite,
 * certificate generation) are imported only by the commands that need them.
 */

const USAGE = `usage: pglite-gateway <command> [options]

commands:
  serve                                   run the gateway (Postgres on PORT, admin API on ADMIN_PORT)
  db create <id> [--read-only] [--user U] [--password P]
                                          create a database; prints how to connect (password shown once)
  db list                                 list databases
  db delete <id>                          delete a database and its data
  db set <id> [--read-only|--writable] [--pool-mode session|transaction|default]
                                          change a database's flags (its clients are disconnected)
  db passwd <id> [--user U] [--password P]
                                          set a user's password (generated when --password is omitted)
  certs [--force]                         generate dev TLS certificates into TLS_DIR for *.WILDCARD_DOMAIN

options:
  -h, --help                              show this help

The db commands go through the running server's admin socket (DATA_DIR/admin.sock) when a server
holds DATA_DIR, and open DATA_DIR directly otherwise. Configuration is read from the environment:
DATA_DIR, TEMPLATE_DIR, CATALOG_URL, WILDCARD_DOMAIN, PORT, TLS_DIR, ...`;

class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;
const help = { help: { type: 'boolean', short: 'h' } } as const satisfies Options;
const credentials = { user: { type: 'string' }, password: { type: 'string' } } as const satisfies Options;

/** Options each command accepts (besides --help) and how many positionals it takes. */
const COMMANDS = {
  serve: { options: {}, args: [] },
  'db create': { options: { 'read-only': { type: 'boolean' }, ...credentials }, args: ['id'] },
  'db list': { options: {}, args: [] },
  'db delete': { options: {}, args: ['id'] },
  'db set': {
    options: {
      'read-only': { type: 'boolean' },
      writable: { type: 'boolean' },
      'pool-mode': { type: 'string' },
    },
    args: ['id'],
  },
  'db passwd': { options: credentials, args: ['id'] },
  certs: { options: { force: { type: 'boolean' } }, args: [] },
} as const satisfies Record<string, { options: Options; args: readonly string[] }>;
type Command = keyof typeof COMMANDS;

interface Parsed {
  command: Command | 'help';
  values: Record<string, unknown>;
  positionals: string[];
}

function parseCommandLine(argv: string[]): Parsed {
  const [first, second] = argv;
  if (first === undefined || first === '-h' || first === '--help')
    return { command: 'help', values: {}, positionals: [] };
  const name = first === 'db' ? `db ${second ?? ''}` : first;
  if (first === 'db' && (second === '-h' || second === '--help')) {
    return { command: 'help', values: {}, positionals: [] };
  }
  if (!Object.hasOwn(COMMANDS, name)) {
    if (first !== 'db') throw new UsageError(`unknown command "${first}"`);
    throw new UsageError(
      `${second ? `unknown db command "${second}"` : 'db needs a command'}: create, list, delete, set, passwd`,
    );
  }
  const command = name as Command;
  const spec = COMMANDS[command];
  const options: Options = { ...help, ...spec.options };
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv.slice(first === 'db' ? 2 : 1),
      options,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.values.help) return { command: 'help', values: {}, positionals: [] };
  if (parsed.positionals.length !== spec.args.length) {
    const expected = spec.args.map((a) => `<${a}>`).join(' ');
    throw new UsageError(`${name} takes ${expected || 'no arguments'}`);
  }
  return { command, values: parsed.values, positionals: parsed.positionals };
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

function printConnection(info: CreatedDatabaseJson | PasswordJson): void {
  console.log(`user:      ${info.username}`);
  console.log(`password:  ${info.password}   (shown once; only a SCRAM verifier is stored)`);
  console.log('');
  console.log('connection string:');
  console.log(`  ${info.connectionString}`);
  console.log('psql:');
  console.log(`  ${info.psql}`);
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

async function runDb(command: Command, values: Parsed['values'], id: string | undefined): Promise<void> {
  if (id !== undefined && !isValidDatabaseId(id)) {
    throw new Error(`invalid database id "${id}": ${errors.invalidDatabaseId().hint}`);
  }
  const str = (k: string) => values[k] as string | undefined;
  const creds = {
    ...(str('user') !== undefined ? { username: str('user') } : {}),
    ...(str('password') !== undefined ? { password: str('password') } : {}),
  };
  const ops = await openOps(loadConfig());
  try {
    switch (command) {
      case 'db create': {
        const created = await ops.create(id as string, { readOnly: values['read-only'] === true, ...creds });
        console.log(`created database "${created.id}"${created.readOnly ? ' (read-only)' : ''}`);
        printConnection(created);
        break;
      }
      case 'db list': {
        const list = await ops.list();
        if (list.length === 0) console.log('no databases');
        else
          printTable([
            ['ID', 'READ-ONLY', 'CREATED'],
            ...list.map((d) => [d.id, d.readOnly ? 'yes' : 'no', d.createdAt]),
          ]);
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
        printConnection(changed);
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
  const patch: { readOnly?: boolean; poolMode?: 'session' | 'transaction' | null } = {};
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
    throw new UsageError('db set needs --read-only, --writable or --pool-mode');
  return patch;
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
  try {
    if (command === 'help') console.log(USAGE);
    else if (command === 'serve') await (await import('../main.js')).serve();
    else if (command === 'certs') await runCerts(values.force === true);
    else await runDb(command, values, positionals[0]);
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return err instanceof UsageError ? 2 : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
