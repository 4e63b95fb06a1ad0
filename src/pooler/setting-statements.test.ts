import { describe, expect, it } from 'vitest';
import { resetSettings, rollsBackToSavepoint, settingsChangedBy } from './setting-statements.js';

describe('settingsChangedBy', () => {
  it.each([
    ['set timezone = utc', [], ['timezone']],
    ['select 1; SET application_name = x', [], ['application_name']],
    ["select set_config('a.b', 'c', false)", ['a.b'], undefined],
    [
      "SELECT set_config ( 'App.Tenant', $1, false), set_config('x.y', 'z', true)",
      ['app.tenant', 'x.y'],
      undefined,
    ],
    ["set app.tenant = 'a'", ['app.tenant'], ['app.tenant']],
    ['SET SESSION "App"."Mode" TO strict', ['app.mode'], ['app.mode']],
    // A SET LOCAL custom name is read back in its transaction but never tracked after it.
    ["set local request.jwt.claims to '{}'", [], ['request.jwt.claims']],
    ['reset my.x; discard all', ['my.x'], undefined],
    ['reset all', [], undefined],
    // A name given as a parameter cannot be known from the text.
    ['select set_config($1, $2, false)', [], undefined],
    // The forms with their own syntax, under the names of what they set.
    [
      "SET LOCAL statement_timeout = '1s'; set time zone 'UTC'; SET NAMES 'UTF8'; set schema 'a'",
      [],
      ['statement_timeout', 'timezone', 'client_encoding', 'search_path'],
    ],
    ['set xml option document; set constraints all deferred; reset role', [], ['xmloption', 'role']],
    ["SET SESSION AUTHORIZATION 'u'", [], undefined],
    ['RESET SESSION AUTHORIZATION', [], undefined],
    [
      'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY',
      [],
      ['default_transaction_isolation', 'default_transaction_read_only', 'default_transaction_deferrable'],
    ],
    ['set session work_mem = 1000', [], ['work_mem']],
    // Names whose first part is LOCAL or SESSION are names, not the qualifier.
    ["SET local.tenant = 'x'", ['local.tenant'], ['local.tenant']],
    [
      "set session.tenant to 'x'; reset local.tenant",
      ['session.tenant', 'local.tenant'],
      ['session.tenant', 'local.tenant'],
    ],
    ["set local local.tenant = 'x'", [], ['local.tenant']],
  ])('%s → changes, custom %j, named %j', (sql, custom, named) => {
    expect(settingsChangedBy(sql)).toStrictEqual(named ? { custom, named } : { custom });
  });

  it.each([
    'update t set a = 1',
    "select 'set x'",
    "select 'set_config(''a.b'', 1)'",
    'select 1',
    'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
    'set transaction read only',
    'SET LOCAL TRANSACTION READ ONLY',
    'set session transaction isolation level repeatable read',
  ])('%s → no change', (sql) => {
    expect(settingsChangedBy(sql)).toBeUndefined();
  });
});

describe('resetSettings', () => {
  it.each([
    ['reset all', { all: true, names: [] }],
    ['RESET Search_Path', { all: false, names: ['search_path'] }],
    ['reset "Search_Path"; select 1', { all: false, names: ['search_path'] }],
    ['reset myapp.tenant', { all: false, names: ['myapp.tenant'] }],
    ['reset time zone', { all: false, names: ['timezone'] }],
    ['set search_path to default', { all: false, names: ['search_path'] }],
    ['set session work_mem = DEFAULT; reset all', { all: true, names: ['work_mem'] }],
    ['set time zone default', { all: false, names: ['timezone'] }],
    ['set local search_path to default', { all: false, names: [], local: ['search_path'] }],
    ['set local.tenant to default', { all: false, names: ['local.tenant'] }],
    ["set search_path = 'default'", undefined],
    ['set search_path = default, public', undefined],
    ["select 'reset all'", undefined],
    ['update t set v = default', undefined],
  ])('%s', (sql, expected) => {
    expect(resetSettings(sql)).toEqual(expected);
  });
});

describe('rollsBackToSavepoint', () => {
  it.each([
    ['rollback to savepoint a', true],
    ['ROLLBACK WORK TO a', true],
    ['select 1; rollback transaction to savepoint "x"', true],
    ['rollback', false],
    ['rollback and chain', false],
    ["select 'rollback to a'", false],
  ])('%s → %s', (sql, expected) => {
    expect(rollsBackToSavepoint(sql)).toBe(expected);
  });
});
