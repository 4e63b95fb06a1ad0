/**
 * Ordered schema migrations: entry N takes the schema from version N to N+1. Append only; never
 * edit a shipped entry, since nodes already at that version will not run it again. Each entry is
 * a list of single statements because PGlite's `query` (extended protocol) takes one at a time.
 * `if not exists` is belt and braces: the version row is the real guard.
 */
export const MIGRATIONS: readonly (readonly string[])[] = [
  [
    `create table if not exists gateway_databases (
      id text primary key,
      read_only boolean not null default false,
      pool_mode text null check (pool_mode in ('session', 'transaction')),
      created_at timestamptz not null default now()
    )`,
    `create table if not exists gateway_credentials (
      database_id text not null references gateway_databases (id) on delete cascade,
      username text not null,
      salt text not null,
      iterations integer not null,
      stored_key text not null,
      server_key text not null,
      updated_at timestamptz not null default now(),
      primary key (database_id, username)
    )`,
  ],
  [
    // Archived snapshots (storage/snapshots.ts): one row per immutable object <id>/<version>.tar.gz.
    `create table if not exists gateway_versions (
      database_id text not null references gateway_databases (id) on delete cascade,
      version text not null,
      sha256 text not null,
      size_bytes bigint not null,
      created_at timestamptz not null default now(),
      primary key (database_id, version)
    )`,
  ],
  [
    // Continuous WAL archiving (storage/wal-objects.ts): the WAL position each base backup holds,
    // and one row per shipped WAL piece.
    'alter table gateway_versions add column if not exists wal_lsn bigint',
    'alter table gateway_versions add column if not exists wal_since timestamptz',
    `create table if not exists gateway_wal (
      database_id text not null references gateway_databases (id) on delete cascade,
      start_lsn bigint not null,
      end_lsn bigint not null,
      object_key text not null,
      sha256 text not null,
      size_bytes bigint not null,
      written_at timestamptz not null default now(),
      -- Ship order: a piece supersedes the bytes of earlier ones it overlaps.
      seq bigint not null,
      primary key (database_id, object_key)
    )`,
    'create index if not exists gateway_wal_order on gateway_wal (database_id, seq)',
  ],
  [
    // Cluster mode (cluster/coordination.ts): nodes heartbeat here; a node is dead for placement
    // once its heartbeat is older than LEASE_TTL. A placement names a database's owner and the
    // generation that fences stale writers (archive records carry it); owner null = released.
    `create table if not exists gateway_nodes (
      id text primary key,
      address text not null,
      heartbeat_at timestamptz not null default now(),
      started_at timestamptz not null default now(),
      open_databases integer not null default 0,
      draining boolean not null default false
    )`,
    `create table if not exists gateway_placements (
      database_id text primary key references gateway_databases (id) on delete cascade,
      owner text null,
      -- Who released it last (owner null): that node's local copy is still the newest.
      released_by text null,
      generation bigint not null default 0,
      claimed_at timestamptz not null default now()
    )`,
    'create index if not exists gateway_placements_owner on gateway_placements (owner)',
  ],
  [
    // Templates (issue 18, admin/templates.ts): a template's SQL is version 1, each migration the
    // next; a database made from one records it (the foreign key refuses deleting a used template),
    // the version it is at, and the error of its last failed migration.
    `create table if not exists gateway_templates (
      name text primary key,
      version integer not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`,
    `create table if not exists gateway_template_versions (
      template_name text not null references gateway_templates (name) on delete cascade,
      version integer not null,
      sql text not null,
      created_at timestamptz not null default now(),
      primary key (template_name, version)
    )`,
    `alter table gateway_databases add column if not exists role_mode text null
      check (role_mode in ('owner', 'writer'))`,
    'alter table gateway_databases add column if not exists template_name text null references gateway_templates (name)',
    'alter table gateway_databases add column if not exists template_version integer null',
    'alter table gateway_databases add column if not exists migration_error text null',
  ],
  [
    // A database's incarnation: new each time an id is created, so a node's local copy of an earlier
    // database of the same id (deleted, then created again) is never served as the new one
    // (storage/local-marks.ts, cluster/node.ts). Databases made before read 'legacy' (LEGACY_INCARNATION):
    // only their copies may be unmarked.
    "alter table gateway_databases add column if not exists incarnation text not null default 'legacy'",
    'alter table gateway_databases alter column incarnation set default gen_random_uuid()::text',
  ],
];
