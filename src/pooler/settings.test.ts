import { describe, expect, it } from 'vitest';
import { parameterStatus } from '../wire/protocol.js';
import { clientIdleInTransactionMs, startupSettings } from './session-options.js';
import { durationMs, listElements, readSettingsSql } from './setting-values.js';
import { ClientSettings, MAX_CUSTOM_NAMES, readBackSql, switchSettingsSql } from './settings.js';

/** A database's shared session as the pooler tracks it, at its defaults. */
function database(opts: { readOnly?: boolean } = {}) {
  const defaults = new Map([
    ['application_name', ''],
    ['TimeZone', 'GMT'],
    ['DateStyle', 'ISO, MDY'],
  ]);
  return {
    settings: new Map(defaults),
    defaults,
    reported: new Set(['application_name', 'TimeZone', 'DateStyle', 'session_authorization']),
    readOnly: opts.readOnly ?? false,
    parameters: { session_authorization: 'postgres' },
    customNames: new Set<string>(),
  };
}

/** A client whose settings the session now has, and the names its read-back asks for. */
function switchedClient(db: ReturnType<typeof database>, wanted: Record<string, string>) {
  const client = new ClientSettings(wanted);
  client.switched(db);
  return { client, names: client.readBack(db, 'I').names };
}

describe('switchSettingsSql', () => {
  it('sets what differs, resets what has no value, and is undefined when nothing differs', () => {
    const current = new Map([
      ['TimeZone', 'UTC'],
      ['work_mem', '8MB'],
      ['DateStyle', 'ISO, MDY'],
    ]);
    const wanted = new Map([['search_path', 'app']]);
    const defaults = new Map([
      ['TimeZone', 'GMT'],
      ['DateStyle', 'ISO, MDY'],
    ]);
    expect(switchSettingsSql(current, wanted, defaults)).toBe(
      `SET "TimeZone" TO 'GMT'; RESET "work_mem"; SET "search_path" TO 'app'`,
    );
    expect(switchSettingsSql(defaults, new Map(), defaults)).toBeUndefined();
  });

  it('gives a list setting back element by element, not as one quoted name', () => {
    const wanted = new Map([['search_path', 'foo, "My ""x"" Schema", "$user", public']]);
    expect(switchSettingsSql(new Map(), wanted, new Map())).toBe(
      `SET "search_path" TO 'foo', 'My "x" Schema', '$user', 'public'`,
    );
    expect(switchSettingsSql(new Map(), new Map([['search_path', '']]), new Map())).toBe(
      `SET "search_path" TO ''`,
    );
    // DateStyle splits its own string.
    expect(switchSettingsSql(new Map(), new Map([['DateStyle', 'ISO, MDY']]), new Map())).toBe(
      `SET "DateStyle" TO 'ISO, MDY'`,
    );
    expect(listElements('"a,b", c')).toEqual(['a,b', 'c']);
    // Unquoted names fold to lower case, as in Postgres (JDBC's currentSchema=MySchema).
    expect(listElements('MySchema, "Kept", public')).toEqual(['myschema', 'Kept', 'public']);
    expect(listElements('""""')).toEqual(['"']);
  });

  it('quotes names and values', () => {
    expect(switchSettingsSql(new Map(), new Map([['we"ird', "it's"]]), new Map())).toBe(
      `SET "we""ird" TO 'it''s'`,
    );
  });
});

describe('ClientSettings.switchSql', () => {
  it('moves the session from one client to another', () => {
    const db = database();
    const first = new ClientSettings({ application_name: 'first', TimeZone: 'UTC' });
    first.switched(db);
    expect(first.switchSql(db)).toBeUndefined();

    const second = new ClientSettings({ application_name: 'second', DateStyle: 'German' });
    expect(second.switchSql(db)).toBe(
      `SET "application_name" TO 'second'; SET "TimeZone" TO 'GMT'; SET "DateStyle" TO 'German'`,
    );
    second.switched(db);
    expect(second.switchSql(db)).toBeUndefined();
    expect(first.switchSql(db)).toBe(
      `SET "application_name" TO 'first'; SET "TimeZone" TO 'UTC'; SET "DateStyle" TO 'ISO, MDY'`,
    );
  });

  it("leaves a changed identity first and sets the client's own last, role after authorization", () => {
    const db = database();
    const alice = new ClientSettings({ session_authorization: 'alice', TimeZone: 'UTC' });
    alice.switched(db);
    const withRole = new ClientSettings({ role: 'reader' });
    expect(withRole.switchSql(db)).toBe(
      `RESET ROLE; SET SESSION AUTHORIZATION "postgres"; SET "TimeZone" TO 'GMT'; SET "role" TO 'reader'`,
    );
    const both = new ClientSettings({ TimeZone: 'UTC', role: 'reader', session_authorization: 'bob' });
    expect(both.switchSql(db)).toBe(
      `RESET ROLE; SET SESSION AUTHORIZATION "postgres"; SET "session_authorization" TO 'bob'; SET "role" TO 'reader'`,
    );
  });

  it('sets the role again after SET SESSION AUTHORIZATION, even when it was the same', () => {
    // B (role rb) held the session; A has session authorization ra and role rb: setting ra
    // clears the role, so rb must follow it.
    const db = database();
    new ClientSettings({ role: 'rb' }).switched(db);
    const a = new ClientSettings({ session_authorization: 'ra', role: 'rb' });
    expect(a.switchSql(db)).toBe(
      `RESET ROLE; SET SESSION AUTHORIZATION "postgres"; SET "session_authorization" TO 'ra'; SET "role" TO 'rb'`,
    );
  });

  it("changes other settings under the starting identity, never under a client's role", () => {
    const db = database();
    // A superuser-only setting, then a role: the setting is restored before the role is taken.
    const a = new ClientSettings({ log_min_messages: 'debug1', role: 'r1' });
    expect(a.switchSql(db)).toBe(`SET "log_min_messages" TO 'debug1'; SET "role" TO 'r1'`);
    a.switched(db);
    // Another client with the same role: the setting is undone as the superuser, then r1 again.
    const b = new ClientSettings({ role: 'r1' });
    expect(b.switchSql(db)).toBe(
      `RESET ROLE; SET SESSION AUTHORIZATION "postgres"; RESET "log_min_messages"; SET "role" TO 'r1'`,
    );
    // Same identity and no other difference: nothing to do.
    b.switched(db);
    expect(new ClientSettings({ role: 'r1' }).switchSql(db)).toBeUndefined();
  });

  it('on a read-only database tracks only the role as identity', () => {
    const db = database({ readOnly: true });
    db.settings.set('session_authorization', 'alice');
    const client = new ClientSettings({ role: 'reader' });
    // session_authorization is an ordinary setting there, with no default: reset before the role.
    expect(client.switchSql(db)).toBe(`RESET "session_authorization"; SET "role" TO 'reader'`);
    client.switched(db);
    expect(new ClientSettings({}).switchSql(db)).toBe('RESET ROLE');
  });
});

describe('ClientSettings.readBack', () => {
  it('reads identity, the defaults and what the client asked for, then the JSON of others', () => {
    const db = database();
    const client = new ClientSettings({ search_path: 'app', TimeZone: 'UTC' });
    const { names, sql } = client.readBack(db, 'I');
    expect(names).toEqual([
      'session_authorization',
      'role',
      'application_name',
      'TimeZone',
      'DateStyle',
      'search_path',
    ]);
    expect(sql).toBe(readBackSql(names));
    expect(sql.startsWith(readSettingsSql(names))).toBe(true);
    expect(sql).toContain("pg_catalog.current_setting('search_path', true)");
    expect(sql).toContain("ARRAY['session_authorization', 'role', 'application_name', 'timezone'");
    expect(sql).toContain('json_object_agg');
  });

  it('is due after a change, and inside a transaction again once it ends', () => {
    const db = database();
    // A client that asked for nothing starts with the known defaults: nothing to read back.
    expect(new ClientSettings({}).due('I')).toBe(false);
    const client = new ClientSettings({ application_name: 'app' });
    expect(client.due('I')).toBe(true);
    // Settings it brought are read back (normalised) outside a transaction only: never as the
    // first statement of its transaction, which SET TRANSACTION ISOLATION LEVEL must precede.
    expect(client.due('T')).toBe(false);
    client.readBack(db, 'I');
    expect(client.due('I')).toBe(false);
    client.switched(db);
    expect(client.due('T')).toBe(false);
    expect(client.due('I')).toBe(true);
    client.readBack(db, 'I');
    client.noteStatement(undefined);
    expect(client.due('I')).toBe(false);
    expect(client.everChanged).toBe(false);
    client.noteStatement({ custom: [] });
    expect(client.everChanged).toBe(true);
    expect(client.due('T')).toBe(true);
    client.readBack(db, 'T');
    expect(client.due('T')).toBe(false);
    // ROLLBACK may undo a SET: read again when the transaction is over.
    expect(client.due('I')).toBe(true);
    client.readBack(db, 'I');
    expect(client.due('I')).toBe(false);
  });
});

describe('ClientSettings.readBack by SHOW', () => {
  it("asks for the tracked names, the client's own others and what its statements set", () => {
    const db = database();
    db.customNames.add('other.client');
    const { client, names } = switchedClient(db, { application_name: 'app' });
    // An earlier read-back found work_mem among the session's other settings: this client's.
    client.noteStatement({ custom: [], named: ['work_mem'] });
    client.readBack(db, 'I');
    client.apply(db, names, ['postgres', 'none', 'app', 'GMT', 'ISO, MDY', null, '{"work_mem":"8MB"}']);
    client.noteStatement({ custom: ['app.tenant'], named: ['statement_timeout', 'app.tenant'] });
    client.noteStatement({ custom: [], named: ['timezone'] });
    const back = client.readBack(db, 'T', true);
    // Not the session user (SHOW reads '' in PGlite), nor another client's custom name (it may
    // not be defined in the session); TimeZone once, whatever the case.
    expect(back.shown).toEqual([
      'role',
      'application_name',
      'TimeZone',
      'DateStyle',
      'work_mem',
      'statement_timeout',
      'app.tenant',
    ]);
    expect(back.names).toContain('other.client');
    const reports = client.applyShown(db, back.names, back.shown ?? [], [
      'none',
      'app',
      'Asia/Tokyo',
      'ISO, MDY',
      '4MB',
      '300ms',
      'a',
    ]);
    expect(reports).toEqual([parameterStatus('TimeZone', 'Asia/Tokyo')]);
    expect(client.value('statement_timeout')).toBe('300ms');
    expect(client.value('work_mem')).toBe('4MB');
    expect(client.value('app.tenant')).toBe('a');
    expect(db.settings.get('statement_timeout')).toBe('300ms');
    // The read-back when the transaction ends reads every setting again.
    expect(client.due('I')).toBe(true);
  });

  it('is not offered outside a fresh transaction, nor after a change the texts cannot name', () => {
    const db = database();
    const { client } = switchedClient(db, {});
    client.noteStatement({ custom: [], named: ['work_mem'] });
    expect(client.readBack(db, 'T').shown).toBeUndefined();
    client.noteStatement({ custom: [], named: ['work_mem'] });
    client.noteStatement({ custom: [] }); // RESET ALL, set_config, SET SESSION AUTHORIZATION
    client.noteStatement({ custom: [], named: ['work_mem'] });
    expect(client.readBack(db, 'T', true).shown).toBeUndefined();
    // Counted from the last read-back.
    client.noteStatement({ custom: [], named: ['work_mem'] });
    expect(client.readBack(db, 'T', true).shown).toContain('work_mem');
  });
});

describe('ClientSettings.apply', () => {
  it('records read-back values and reports the reported ones that changed', () => {
    const db = database();
    const { client, names } = switchedClient(db, { application_name: 'app' });
    const values = ['postgres', 'none', 'app', 'UTC', 'ISO, MDY'];
    const reports = client.apply(db, names, [...values, '{}']);
    expect(reports).toEqual([parameterStatus('TimeZone', 'UTC')]);
    expect(db.settings.get('TimeZone')).toBe('UTC');
    // The identity at its defaults is not tracked: nothing to switch back later.
    expect(db.settings.has('session_authorization')).toBe(false);
    expect(db.settings.has('role')).toBe(false);
    // The same values again report nothing.
    expect(client.apply(db, names, [...values, '{}'])).toEqual([]);
    // The session is at UTC now: another client's switch sets it back.
    const other = new ClientSettings({});
    expect(other.switchSql(db)).toBe(`SET "application_name" TO ''; SET "TimeZone" TO 'GMT'`);
  });

  it('tracks a changed identity and reports session_authorization', () => {
    const db = database();
    const client = new ClientSettings({});
    const names = ['session_authorization', 'role'];
    expect(client.apply(db, names, ['alice', 'reader', null])).toEqual([
      parameterStatus('session_authorization', 'alice'),
    ]);
    expect(db.settings.get('role')).toBe('reader');
    const other = new ClientSettings({});
    // PGlite's RESET SESSION AUTHORIZATION does not restore its superuser: set explicitly.
    expect(other.switchSql(db)).toBe('RESET ROLE; SET SESSION AUTHORIZATION "postgres"');
    // Back to the defaults: forgotten, and the change is reported.
    expect(client.apply(db, names, ['postgres', 'none', null])).toEqual([
      parameterStatus('session_authorization', 'postgres'),
    ]);
    expect(other.switchSql(db)).toBeUndefined();
  });

  it('reads custom names back by name, and takes their empty value for unset', () => {
    const db = database();
    const a = new ClientSettings({});
    a.noteStatement({ custom: ['app.tenant'] });
    const first = a.readBack(db, 'I');
    expect(first.names).toContain('app.tenant');
    a.apply(
      db,
      first.names,
      first.names.map((n) => (n === 'app.tenant' ? 'a' : null)),
    );
    expect(a.value('app.tenant')).toBe('a');
    // Another client, which never set it: the session's value is reset for it.
    const b = new ClientSettings({});
    expect(b.switchSql(db)).toBe('RESET "app.tenant"');
    b.switched(db);
    // Its read-back asks for the name too, and '' (the placeholder after RESET) is no value.
    const again = b.readBack(db, 'I');
    expect(again.names).toContain('app.tenant');
    b.apply(
      db,
      again.names,
      again.names.map((n) => (n === 'app.tenant' ? '' : null)),
    );
    expect(b.value('app.tenant')).toBeUndefined();
    expect(a.switchSql(db)).toBe(`SET "app.tenant" TO 'a'`);
  });

  it('tracks at most MAX_CUSTOM_NAMES custom names per session, none of them huge', () => {
    const db = database();
    const c = new ClientSettings({});
    c.noteStatement({ custom: [`x.${'n'.repeat(10_000)}`] });
    expect(c.readBack(db, 'I').untracked).toMatch(/^x\.n+$/);
    expect(db.customNames.size).toBe(0);
    c.noteStatement({ custom: Array.from({ length: MAX_CUSTOM_NAMES + 50 }, (_, i) => `x.n${i}`) });
    expect(c.readBack(db, 'I').untracked).toBe(`x.n${MAX_CUSTOM_NAMES + 49}`);
    expect(db.customNames.size).toBe(MAX_CUSTOM_NAMES);
  });

  it('skips NULL values (a setting the server does not have)', () => {
    const db = database();
    const client = new ClientSettings({ TimeZone: 'UTC' });
    client.switched(db);
    expect(client.apply(db, ['TimeZone'], [null, null])).toEqual([]);
    expect(db.settings.get('TimeZone')).toBe('UTC');
  });

  it('makes settings it does not know by name follow their client, from the JSON', () => {
    const db = database();
    let { client, names } = switchedClient(db, {});
    const base = ['postgres', 'none', '', 'GMT', 'ISO, MDY'];
    client.apply(db, names, [
      ...base,
      JSON.stringify({ statement_timeout: '5s', work_mem: 8192, search_path: 'x' }),
    ]);
    // Strings only (work_mem came as a number: ignored).
    expect(db.settings.get('statement_timeout')).toBe('5s');
    expect(db.settings.get('search_path')).toBe('x');
    expect(db.settings.has('work_mem')).toBe(false);
    // They are not read back by name: the JSON carries them.
    names = client.readBack(db, 'I').names;
    expect(names).not.toContain('statement_timeout');
    expect(names).not.toContain('search_path');
    // Another client does not inherit them.
    expect(new ClientSettings({}).switchSql(db)).toBe(`RESET "statement_timeout"; RESET "search_path"`);
    // One RESET in the session: it drops out of the JSON and is forgotten.
    client.apply(db, names, [...base, JSON.stringify({ search_path: 'x' })]);
    expect(db.settings.has('statement_timeout')).toBe(false);
    expect(new ClientSettings({}).switchSql(db)).toBe(`RESET "search_path"`);
    // Malformed JSON changes nothing.
    client.apply(db, names, [...base, '{not json']);
    expect(db.settings.get('search_path')).toBe('x');
    // And the client itself switches back to them after another one ran.
    const other = new ClientSettings({});
    other.switched(db);
    expect(client.switchSql(db)).toBe(`SET "search_path" TO 'x'`);
  });
});

describe('ClientSettings.reset', () => {
  it('forgets what the client set, named or not, and keeps what it connected with (DISCARD ALL)', () => {
    const db = database();
    const { client, names } = switchedClient(db, { TimeZone: 'UTC' });
    client.apply(db, names, [
      'postgres',
      'none',
      'zz',
      'UTC',
      'ISO, MDY',
      JSON.stringify({ work_mem: '8MB' }),
    ]);
    expect(client.switchSql(db)).toBeUndefined();
    client.reset();
    expect(client.due('I')).toBe(true);
    expect(client.switchSql(db)).toBe(`SET "application_name" TO ''; RESET "work_mem"`);
    client.switched(db);
    expect(db.settings).toEqual(new Map([...db.defaults, ['TimeZone', 'UTC']]));
    // The read-back after it reports the change against the values before the reset.
    const after = client.apply(db, names, ['postgres', 'none', '', 'UTC', 'ISO, MDY', '{}']);
    expect(after.map((m) => m.toString('latin1'))).toEqual([expect.stringContaining('application_name')]);
    expect(client.readBack(db, 'I').names).toEqual([
      'session_authorization',
      'role',
      'application_name',
      'TimeZone',
      'DateStyle',
    ]);
  });
});

describe('statement_timeout', () => {
  it('reads Postgres time values, no unit meaning ms', () => {
    expect(durationMs('1000')).toBe(1000);
    expect(durationMs('1.5s')).toBe(1500);
    expect(durationMs(' 2min ')).toBe(120_000);
    expect(durationMs('250us')).toBe(0.25);
    expect(durationMs('soon')).toBeUndefined();
  });

  it("is the client's own value, from its startup options or a read-back, and none when 0", () => {
    expect(new ClientSettings({ statement_timeout: '2s' }).statementTimeoutMs()).toBe(2000);
    expect(new ClientSettings({ statement_timeout: '0' }).statementTimeoutMs()).toBeUndefined();
    expect(new ClientSettings({ Statement_Timeout: '3s' }).statementTimeoutMs()).toBe(3000);
    const db = database();
    const { client, names } = switchedClient(db, {});
    expect(client.statementTimeoutMs()).toBeUndefined();
    client.apply(db, names, [
      'postgres',
      'none',
      '',
      'GMT',
      'ISO, MDY',
      JSON.stringify({ statement_timeout: '500' }),
    ]);
    expect(client.statementTimeoutMs()).toBe(500);
  });
});

describe('clientIdleInTransactionMs', () => {
  it("takes the client's idle_in_transaction_session_timeout when shorter than the gateway's", () => {
    expect(clientIdleInTransactionMs({ idle_in_transaction_session_timeout: '500' }, {}, 60_000)).toBe(500);
    expect(clientIdleInTransactionMs({}, { IDLE_IN_TRANSACTION_SESSION_TIMEOUT: '2s' }, 60_000)).toBe(2000);
    expect(clientIdleInTransactionMs({ idle_in_transaction_session_timeout: '5min' }, {}, 60_000)).toBe(
      60_000,
    );
    expect(clientIdleInTransactionMs({ idle_in_transaction_session_timeout: '0' }, {}, 60_000)).toBe(60_000);
    expect(clientIdleInTransactionMs({ idle_in_transaction_session_timeout: 'soon' }, {}, 60_000)).toBe(
      60_000,
    );
    expect(clientIdleInTransactionMs({ idle_in_transaction_session_timeout: '700' }, {}, 0)).toBe(700);
    expect(
      startupSettings(
        { user: 'u', transaction_timeout: '5', TimeZone: 'UTC' },
        { idle_session_timeout: '1' },
      ),
    ).toEqual({
      TimeZone: 'UTC',
    });
  });
});
