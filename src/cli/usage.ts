import type { ParseArgsConfig } from 'node:util';

/**
 * The CLI's commands: the options each accepts (for `parseArgs`), its positionals, and its
 * `--help` text. Pure data, kept together so a command's help always lists its options
 * (usage.test.ts checks that).
 */

type Options = NonNullable<ParseArgsConfig['options']>;
export const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const satisfies Options;
const credentials = { user: { type: 'string' }, password: { type: 'string' } } as const satisfies Options;

/** Options each command accepts (besides --help) and how many positionals it takes. */
export const COMMANDS = {
  serve: { options: {}, args: [] },
  'db create': {
    options: {
      'read-only': { type: 'boolean' },
      template: { type: 'string' },
      role: { type: 'string' },
      ...credentials,
    },
    args: ['id'],
  },
  'db list': { options: {}, args: [] },
  'db delete': { options: {}, args: ['id'] },
  'db set': {
    options: {
      'read-only': { type: 'boolean' },
      writable: { type: 'boolean' },
      'pool-mode': { type: 'string' },
      role: { type: 'string' },
    },
    args: ['id'],
  },
  'db types': { options: { out: { type: 'string' } }, args: ['id'] },
  'db passwd': { options: credentials, args: ['id'] },
  'db versions': { options: {}, args: ['id'] },
  'db restore': { options: { at: { type: 'string' } }, args: ['id', 'version?'] },
  'db clone': {
    options: { version: { type: 'string' }, at: { type: 'string' }, ...credentials },
    args: ['src', 'new'],
  },
  upload: { options: { create: { type: 'boolean' }, user: { type: 'string' } }, args: ['id', 'file'] },
  certs: { options: { force: { type: 'boolean' } }, args: [] },
  'db move': { options: {}, args: ['id', 'node'] },
  'node drain': { options: {}, args: [] },
  'template create': { options: { sql: { type: 'string' } }, args: ['name'] },
  'template list': { options: {}, args: [] },
  'template delete': { options: {}, args: ['name'] },
  'template update': { options: { sql: { type: 'string' } }, args: ['name'] },
  'template migrate': { options: { all: { type: 'boolean' } }, args: ['name'] },
  'template types': { options: { out: { type: 'string' } }, args: ['name'] },
} as const satisfies Record<string, { options: Options; args: readonly string[] }>;
export type Command = keyof typeof COMMANDS;

export const USAGE = `usage: pglite-gateway <command> [options]

commands:
  serve                                   run the gateway (Postgres on HOST:PORT, admin API on ADMIN_PORT)
  db create <id> [--read-only] [--template T [--role owner|writer]] [--user U] [--password P]
                                          create a database (from template T: as a writer by default);
                                          prints how to connect (password shown once)
  db list                                 list databases
  db delete <id>                          delete a database and its data
  db set <id> [--read-only|--writable] [--pool-mode session|transaction|default] [--role owner|writer]
                                          change a database's flags (its clients are disconnected)
  db types <id> [--out FILE]              the database's schema as TypeScript types (needs a running server)
  db passwd <id> [--user U] [--password P]
                                          set a user's password (generated when --password is omitted)
  db versions <id>                        list a database's archived versions, newest first
  db restore <id> <version>|--at <time>   replace a database with a version or a point in time (its clients are
                                          disconnected; the restored state becomes the newest version)
  db clone <src> <new> [--version V | --at TIME] [--user U] [--password P]
                                          a new database from a version of <src> (default: its latest)
  upload <id> <file> [--create] [--user U]
                                          install a PGDATA tarball (PGlite dumpDataDir(), .tar.gz or
                                          .tar) as the database; --create makes a new database with a
                                          generated password, otherwise its credentials stay
  db move <id> <node>                     cluster mode: hand a database this node owns to node <node>
  node drain                              cluster mode: hand every database of this node to the others
  certs [--force]                         generate dev TLS certificates into TLS_DIR for *.WILDCARD_DOMAIN
  template create <name> --sql FILE       a template databases are made from: its SQL, built once
  template list                           list templates: version, databases made from each
  template delete <name>                  delete a template no database uses
  template update <name> --sql FILE       record a migration as the next version
  template migrate <name> --all           migrate every database of the template now (needs a running server)
  template types <name> [--out FILE]      the template's schema as TypeScript types

options:
  -h, --help                              show this help; <command> --help shows a command's options

The db commands go through the running server's admin socket (DATA_DIR/admin.sock) when a server
holds DATA_DIR, and open DATA_DIR directly otherwise. versions, restore and clone need an archive
(ARCHIVE_URL); upload works without one (MAX_UPLOAD_BYTES caps the uncompressed tarball).
Configuration is read from the environment: DATA_DIR, TEMPLATE_DIR, CATALOG_URL, WILDCARD_DOMAIN,
PORT, TLS_DIR, ARCHIVE_URL, ...`;

const DB_FOOTER = `Goes through the running server's admin socket (DATA_DIR/admin.sock) when a server holds
DATA_DIR, and opens DATA_DIR directly otherwise. Configuration comes from the environment.`;
const ARCHIVE_FOOTER = `Needs an archive (ARCHIVE_URL). ${DB_FOOTER}`;
const ID = `<id>: 1-63 characters of a-z, 0-9 and "-", starting with a letter or digit; postgres,
template0 and template1 are reserved (a dbname of postgres names no database).`;
const USER = '--user U          login user name (default: postgres)';
const PASSWORD =
  '--password P      at least MIN_PASSWORD_LENGTH (12) characters; generated (24) when omitted';
const HELP = '-h, --help        show this help';

/** Assembles one command's help: usage line, what it does, its options. */
function help(usage: string, what: string, options: string[], footer?: string): string {
  const lines = [`usage: pglite-gateway ${usage}`, '', what, '', 'options:'];
  for (const option of [...options, HELP]) lines.push(`  ${option}`);
  if (footer) lines.push('', footer);
  return lines.join('\n');
}

export const COMMAND_HELP: Record<Command, string> = {
  serve: help(
    'serve',
    `Runs the gateway: Postgres clients on HOST:PORT (TLS; the database is named by the SNI host
<id>.WILDCARD_DOMAIN, options=endpoint=<id> or dbname=<id>), the admin API on
ADMIN_HOST:ADMIN_PORT and DATA_DIR/admin.sock. SIGTERM/SIGINT drain: open transactions may
finish for DRAIN_TIMEOUT; a second signal ends them at once, a third exits without closing.`,
    [],
    'All configuration comes from the environment (PORT, HOST, DATA_DIR, TLS_*, CATALOG_URL,\nARCHIVE_URL, ...; see the README).',
  ),
  'db create': help(
    'db create <id> [--read-only] [--template T [--role owner|writer]] [--user U] [--password P]',
    `Creates a database and prints how to connect. The password is shown once; only a SCRAM
verifier is stored.\n${ID}`,
    [
      '--read-only       clients may read but not write',
      '--template T      a copy of template T (see template create)',
      '--role R          writer (default with --template: the template objects are protected) or owner',
      USER,
      PASSWORD,
    ],
    DB_FOOTER,
  ),
  'db list': help('db list', 'Lists the databases: id, read-only, created.', [], DB_FOOTER),
  'db delete': help(
    'db delete <id>',
    "Disconnects the database's clients and deletes it: catalog entry, data and archived versions.",
    [],
    DB_FOOTER,
  ),
  'db set': help(
    'db set <id> [--read-only|--writable] [--pool-mode session|transaction|default]',
    "Changes a database's flags. Its clients are disconnected so it reopens with them.",
    [
      '--read-only       make it read-only',
      '--writable        make it writable again',
      "--pool-mode M     session, transaction, or default (the server's POOL_MODE)",
      '--role R          owner (the superuser) or writer (cannot touch what a template owns)',
    ],
    DB_FOOTER,
  ),
  'db passwd': help(
    'db passwd <id> [--user U] [--password P]',
    "Sets a user's password; with a new --user it adds that user. Prints how to connect.",
    [USER, PASSWORD],
    DB_FOOTER,
  ),
  'db versions': help(
    'db versions <id>',
    "Lists the database's archived versions, newest first.",
    [],
    ARCHIVE_FOOTER,
  ),
  'db restore': help(
    'db restore <id> [version] [--at TIME]',
    `Replaces the database with one of its versions (see db versions), or with its state at a point
in time (give a version or --at, one of the two): the newest version before it plus the WAL
shipped by then (DURABILITY=async|sync). Its
clients are disconnected, the state it replaced is snapshotted first if it was written, and the
restored state becomes the newest version.`,
    ['--at TIME         an ISO 8601 time with its zone, e.g. 2026-11-30T21:05:00Z'],
    ARCHIVE_FOOTER,
  ),
  'db clone': help(
    'db clone <src> <new> [--version V | --at TIME] [--user U] [--password P]',
    `Creates database <new> (own password, writable) from <src>: a version, its state at a point
in time, or by default its newest state (the latest version plus the WAL shipped since).\n${ID.replace('<id>', '<new>')}`,
    [
      '--version V       the version to clone',
      '--at TIME         the point in time to clone (ISO 8601 with its zone)',
      USER,
      PASSWORD,
    ],
    ARCHIVE_FOOTER,
  ),
  upload: help(
    'upload <id> <file> [--create] [--user U]',
    `Installs a PGDATA tarball (PGlite dumpDataDir(), .tar.gz or plain .tar) as the database,
after validating it (at most MAX_UPLOAD_BYTES uncompressed). Progress goes to stderr. With an
archive it is stored as a new version. Without --create the database must exist: its clients are
disconnected and its credentials stay.`,
    [
      '--create          create the database (generated password, shown once)',
      '--user U          login user name of the created database (default: postgres)',
    ],
    DB_FOOTER,
  ),
  'db types': help(
    'db types <id> [--out FILE]',
    `Prints the database's tables, views, enums and composite types as a TypeScript module (a
Database interface with Row, Insert and Update per table, typed as node-postgres returns values).`,
    ['--out FILE        write it to FILE instead of stdout'],
    'Needs a running server (the types are read from the open database).',
  ),
  'db move': help(
    'db move <id> <node>',
    `Cluster mode: hands database <id>, owned by this node, to the live node <node> (its NODE_ID).
Its clients are ended (they reconnect and are forwarded), its last WAL shipped and a snapshot
taken, then <node> claims it with the next generation and opens it from the archive.`,
    [],
    'Needs the running server of the owning node (through DATA_DIR/admin.sock).',
  ),
  'node drain': help(
    'node drain',
    `Cluster mode: this node takes no new databases and hands each one it owns to the node
rendezvous hashing prefers among the other live nodes, as db move does; prints where each went.
A restart of the node ends the draining state.`,
    [],
    'Needs the running server of the node (through DATA_DIR/admin.sock).',
  ),
  'template create': help(
    'template create <name> --sql FILE',
    `Creates a template from the SQL in FILE, run once as the template owner on a fresh database;
databases made from it (db create --template) are copies. <name>: 1-63 of a-z, 0-9, _ and -.`,
    ['--sql FILE        the template SQL (required)'],
    DB_FOOTER,
  ),
  'template list': help(
    'template list',
    'Lists templates: name, version, databases made from it.',
    [],
    DB_FOOTER,
  ),
  'template delete': help(
    'template delete <name>',
    'Deletes a template; refused while a database made from it exists.',
    [],
    DB_FOOTER,
  ),
  'template update': help(
    'template update <name> --sql FILE',
    `Records the migration in FILE as the template's next version (it is tried on the template
first). Databases made from the template migrate when they next open, in one transaction; one that
fails stays at its version, usable, and db list shows the error.`,
    ['--sql FILE        the migration SQL (required)'],
    DB_FOOTER,
  ),
  'template migrate': help(
    'template migrate <name> --all',
    'Migrates every database made from the template now, one at a time, printing each outcome.',
    ['--all             every database of the template (required)'],
    'Needs a running server.',
  ),
  'template types': help(
    'template types <name> [--out FILE]',
    "Prints the template's schema as a TypeScript module (see db types).",
    ['--out FILE        write it to FILE instead of stdout'],
    DB_FOOTER,
  ),
  certs: help(
    'certs [--force]',
    `Generates development TLS certificates into TLS_DIR: a local CA (ca.pem, ca-key.pem) and a
certificate for *.WILDCARD_DOMAIN, localhost, 127.0.0.1 and ::1 (cert.pem, key.pem). Existing
files are kept unless --force.`,
    ['--force           issue the server certificate again (an existing CA is kept)'],
  ),
};
