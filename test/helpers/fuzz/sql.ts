import fc from 'fast-check';

/** SQL the fuzz sends, ordinary and hostile, and the small arbitraries the pieces draw names from. */

/** Ordinary statements on the fuzz table (never on `counter`/`commits`, which the checker owns). */
export const SQL_ORDINARY = [
  'select 1',
  'select $1::int + 1',
  'select $1::text, $2::int',
  'select * from fuzz_t',
  "insert into fuzz_t values (1, 'x')",
  'insert into fuzz_t values ($1::int, $2)',
  'update fuzz_t set v = v',
  'begin',
  'commit',
  'rollback',
  'start transaction isolation level serializable',
  'savepoint sp',
  'rollback to savepoint sp',
  'release savepoint sp',
  'select 1/0',
  "begin; insert into fuzz_t values (2, 'y'); select 1/0",
  "select 1; select 'two'",
  'select pg_sleep(0.05)',
  'copy fuzz_t to stdout',
  'copy fuzz_t from stdin',
  'copy (select 1) to stdout',
  'listen fuzz_ch',
  "notify fuzz_ch, 'x'",
  'unlisten *',
  'prepare fz as select 1',
  'execute fz',
  'deallocate all',
  'show all',
  "select repeat('x', 100000)",
  'select * from generate_series(1, 500)',
  'declare c cursor for select 1',
  'fetch all from c',
  'vacuum fuzz_t',
  'checkpoint',
  'select nosuchcolumn',
  'selec 1',
  '',
  ';',
];

/** Statements a shared, sandboxed session must survive (and must not leak to the next client). */
export const SQL_HOSTILE = [
  "COPY fuzz_t TO PROGRAM 'ls'",
  "COPY fuzz_t FROM PROGRAM 'ls'",
  "ALTER SYSTEM SET wal_buffers='512MB'",
  "CREATE TABLESPACE t LOCATION '/tmp'",
  'SET ROLE pg_read_all_data',
  "SET statement_timeout='1ms'",
  'SET search_path = nowhere',
  'SET default_transaction_read_only = on',
  'SET SESSION AUTHORIZATION pg_read_all_data',
  'RESET ALL',
  'DISCARD ALL',
  "select set_config('search_path', 'nowhere', false)",
  'select pg_reload_conf()',
  'select pg_terminate_backend(pg_backend_pid())',
  'select pg_cancel_backend(pg_backend_pid())',
];

export const sqlArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...SQL_ORDINARY) },
  { weight: 3, arbitrary: fc.constantFrom(...SQL_HOSTILE) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
);

export const nameArb = fc.constantFrom('', 's1', 's2', 'fz');
export const bytesArb = (max: number) => fc.uint8Array({ maxLength: max });
