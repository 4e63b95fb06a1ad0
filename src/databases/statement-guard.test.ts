import { describe, expect, it } from 'vitest';
import { detectCopyFromStdin, judgeStatement, mayChangeSettings } from './statement-guard.js';

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

describe('mayChangeSettings', () => {
  it.each([
    ['set timezone = utc', true],
    ['select 1; SET application_name = x', true],
    ["select set_config('a.b', 'c', false)", true],
    ['reset all', true],
    ['update t set a = 1', false],
    ["select 'set x'", false],
  ])('%s → %s', (sql, expected) => {
    expect(mayChangeSettings(sql)).toBe(expected);
  });
});
