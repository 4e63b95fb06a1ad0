import { describe, expect, it } from 'vitest';
import { deallocatedNames, detectCopyFromStdin, forgetAll, judgeStatement } from './statement-guard.js';

describe('detectCopyFromStdin', () => {
  it.each([
    ['copy t from stdin', 'single'],
    ["COPY t (a, b) FROM STDIN WITH (FORMAT csv, DELIMITER ';');", 'single'],
    ['/* hi */ copy public.t from stdin', 'single'],
    ['copy t to stdout', 'none'],
    ["select 'copy t from stdin'", 'none'],
    ['select 1; copy t from stdin', 'embedded'],
    ['begin; copy t from stdin; commit', 'embedded'],
    ["copy t from 'stdin'", 'none'],
  ])('%s → %s', (sql, expected) => {
    expect(detectCopyFromStdin(sql)).toBe(expected);
  });
});

describe('judgeStatement', () => {
  it('refuses identity changes only in read-only databases', () => {
    expect(judgeStatement('reset session authorization', { readOnly: true }).kind).toBe('refuse');
    expect(
      judgeStatement("select set_config('session_authorization','x',false)", { readOnly: true }).kind,
    ).toBe('refuse');
    expect(judgeStatement('DISCARD   ALL', { readOnly: true }).kind).toBe('refuse');
    expect(judgeStatement('reset session authorization', { readOnly: false }).kind).toBe('pass');
  });
});

describe('judgeStatement refusals', () => {
  const rw = { readOnly: false };
  it.each([
    ["copy t to program 'cat'", 'copy_program'],
    ["COPY (select 1) TO PROGRAM 'x'", 'copy_program'],
    ["copy t from program 'echo'", 'copy_program'],
    ["create tablespace t location '/tmp'", 'tablespace'],
    ['/* x */ CREATE   TABLESPACE t LOCATION $$/tmp$$', 'tablespace'],
    ['select 1; copy t from stdin', 'copy_in_batch'],
  ])('%s → %s', (sql, label) => {
    const verdict = judgeStatement(sql, rw);
    expect(verdict.kind).toBe('refuse');
    if (verdict.kind === 'refuse') {
      expect(verdict.error.label).toBe(label);
      expect(verdict.error.code).toMatch(/^[0-9A-Z]{5}$/);
      expect(verdict.error.code).not.toBe('XX000');
    }
  });

  it.each([
    "select 'copy t to program cat'",
    'select 1 -- create tablespace',
    "select 'how to discard all items'",
    'select program from tablespaces',
  ])('passes %s', (sql) => {
    expect(judgeStatement(sql, { readOnly: true }).kind).toBe('pass');
  });
});

describe('server files', () => {
  it.each([
    ["copy t to '/pglite/data/postgresql.conf'", 'copy_file'],
    ["COPY (select 1) TO E'/tmp/x'", 'copy_file'],
    ["copy t from '/etc/passwd'", 'copy_file'],
    ["select lo_export(1, '/pglite/data/x')", 'server_file'],
    ["select lo_import('/etc/hosts')", 'server_file'],
    // A function name may be quoted or spelled with Unicode escapes.
    ['select "lo_export"(1, \'/pglite/data/x\')', 'server_file'],
    ['select pg_catalog."lo_import"(\'/etc/hosts\')', 'server_file'],
    ['select U&"lo\\005Fexport"(1, \'/x\')', 'server_file'],
    ["select u&\"lo!005fimport\" uescape '!' ('/x')", 'server_file'],
  ])('%s → %s', (sql, label) => {
    const verdict = judgeStatement(sql, { readOnly: false });
    expect(verdict.kind === 'refuse' && verdict.error.label).toBe(label);
  });

  it.each(['copy t to stdout', 'copy t from stdin', "select 'copy t to ''/x'''"])('passes %s', (sql) => {
    expect(judgeStatement(sql, { readOnly: false }).kind).not.toBe('refuse');
  });
});

describe('writer databases (a baseline identity)', () => {
  const writer = { readOnly: false, engine: { baselineSql: 'SET SESSION AUTHORIZATION gateway_writer' } };
  const owner = { readOnly: false, engine: { baselineSql: '' } };
  it.each([
    'SET SESSION AUTHORIZATION postgres',
    'reset session authorization',
    "set session_authorization = 'postgres'",
    'DISCARD ALL',
    "select set_config('session_authorization', 'postgres', false)",
    // The GUC's name as a quoted identifier, or spelled with Unicode escapes.
    'set "session_authorization" = postgres',
    'set U&"session\\005Fauthorization" = postgres',
    'SET u&"session\\005f\\0061uthorization" TO postgres',
    'set U&"session!005Fauthorization" UESCAPE \'!\' = postgres',
    'set local U&"\\+000073ession_authorization" = postgres',
  ])('refuses %s with 42501 when the identity is fixed, passes it for the owner', (sql) => {
    const verdict = judgeStatement(sql, writer);
    expect(verdict.kind === 'refuse' && verdict.error.code).toBe('42501');
    expect(judgeStatement(sql, owner).kind).toBe('pass');
  });
});

describe('forgetAll', () => {
  it('finds DISCARD ALL and DEALLOCATE [PREPARE] ALL however they are written', () => {
    expect(forgetAll('discard all')).toEqual({ kind: 'discard', alone: true });
    expect(forgetAll(' /* c */ DISCARD ALL -- bye\n;')).toEqual({ kind: 'discard', alone: true });
    expect(forgetAll('deallocate prepare all')).toEqual({ kind: 'deallocate', alone: true });
    expect(forgetAll('Deallocate All;')).toEqual({ kind: 'deallocate', alone: true });
    expect(forgetAll('select 1; deallocate all')).toEqual({ kind: 'deallocate', alone: false });
    expect(forgetAll('discard all; discard all')).toEqual({ kind: 'discard', alone: false });
  });

  it('ignores other statements and the words inside strings or comments', () => {
    expect(forgetAll('deallocate mine')).toBeUndefined();
    expect(forgetAll('discard plans')).toBeUndefined();
    expect(forgetAll("select 'discard all'")).toBeUndefined();
    expect(forgetAll('select 1 /* deallocate all */')).toBeUndefined();
  });
});

describe('deallocatedNames', () => {
  it('reads the name as Postgres does', () => {
    expect(deallocatedNames('DEALLOCATE _pg3_0')).toEqual({ names: ['_pg3_0'], alone: true });
    expect(deallocatedNames('deallocate Stmt1;')).toEqual({ names: ['stmt1'], alone: true });
    expect(deallocatedNames('/* c */ DEALLOCATE PREPARE "S1" -- c')).toEqual({ names: ['S1'], alone: true });
    expect(deallocatedNames('DEALLOCATE "a""b"')).toEqual({ names: ['a"b'], alone: true });
    expect(deallocatedNames('DEALLOCATE "all"')).toEqual({ names: ['all'], alone: true });
    expect(deallocatedNames('DEALLOCATE prepare')).toEqual({ names: ['prepare'], alone: true });
    expect(deallocatedNames('DEALLOCATE PREPARE prepare')).toEqual({ names: ['prepare'], alone: true });
    expect(deallocatedNames('DEALLOCATE U&"\\0073\\0031"')).toEqual({ names: ['s1'], alone: true });
    expect(deallocatedNames(`DEALLOCATE U&"!0073!0031" UESCAPE '!'`)).toEqual({
      names: ['s1'],
      alone: true,
    });
  });

  it('sees every DEALLOCATE of a name among other statements', () => {
    expect(deallocatedNames('select 1; deallocate a; DEALLOCATE "B"')).toEqual({
      names: ['a', 'B'],
      alone: false,
    });
  });

  it('leaves ALL to forgetAll, and what is no DEALLOCATE of a name', () => {
    for (const sql of [
      'deallocate all',
      'DEALLOCATE PREPARE ALL',
      'deallocate',
      "deallocate 's1'",
      'deallocate s1 s2', // syntax errors are Postgres' to report
      'deallocate "s1" uescape',
      "select 'deallocate s1'",
      'select 1 /* deallocate s1 */',
      'prepare s1 as select 1',
    ])
      expect(deallocatedNames(sql), sql).toBeUndefined();
  });
});

describe('client_encoding', () => {
  const refused = (sql: string) => {
    const verdict = judgeStatement(sql, { readOnly: false });
    return verdict.kind === 'refuse' ? verdict.error.code : undefined;
  };

  it('refuses encodings that would need a conversion PGlite does not have', () => {
    for (const sql of [
      "set client_encoding = 'LATIN1'",
      'SET client_encoding TO win1252',
      "set session client_encoding to 'SJIS'",
      "SET NAMES 'LATIN1'",
      "select pg_catalog.set_config('client_encoding', 'LATIN9', false)",
      "select 1; set local client_encoding = 'EUC_JP'",
    ]) {
      expect(refused(sql), sql).toBe('0A000');
    }
  });

  it('lets UTF8 under any name, SQL_ASCII and DEFAULT through, and the words elsewhere', () => {
    for (const sql of [
      "set client_encoding = 'UTF8'",
      'set client_encoding to "utf-8"',
      "SET NAMES 'unicode'",
      'set client_encoding to default',
      "set client_encoding = 'SQL_ASCII'",
      'set client_encoding from current',
      "set client_encoding = '''utf-8'''",
      "select 'set names latin1' as s",
      'select names from encoding',
    ]) {
      expect(refused(sql), sql).toBeUndefined();
    }
  });
});

describe('connection timeouts (they would end the shared session)', () => {
  it.each([
    "set idle_in_transaction_session_timeout = '5s'",
    'SET SESSION idle_session_timeout TO 1000',
    'set local transaction_timeout = 50',
    'set "idle_in_transaction_session_timeout" = 10',
    "select set_config('transaction_timeout', '1min', true)",
    "select set_config('idle_session_timeout', $1, false)",
  ])('refuses %s with 0A000', (sql) => {
    const verdict = judgeStatement(sql, { readOnly: false });
    expect(verdict.kind === 'refuse' && verdict.error.code).toBe('0A000');
  });

  it.each([
    'set idle_in_transaction_session_timeout = 0',
    "set idle_session_timeout to '0'",
    'set transaction_timeout to default',
    'reset idle_in_transaction_session_timeout',
    "select set_config('transaction_timeout', '0', false)",
    "select 'set idle_session_timeout = 5'",
    'set statement_timeout = 5000',
  ])('passes %s', (sql) => {
    expect(judgeStatement(sql, { readOnly: false }).kind).toBe('pass');
  });
});
