import { describe, expect, it } from 'vitest';
import { tagged } from '../../test/helpers/messages.js';
import { Frontend } from '../wire/protocol.js';
import { closeStatements, renameStatement, restoreNames } from './statement-renames.js';
import { StatementNames } from './statements.js';

describe('StatementNames', () => {
  it('gives two clients different backend names for the same statement name', () => {
    const a = new StatementNames(1, 10);
    const b = new StatementNames(2, 10);
    expect(a.define('P_0')).not.toBe(b.define('P_0'));
    expect(a.use('P_0')).toBe(a.define('P_0'));
  });

  it('keeps backend names short whatever the client name', () => {
    const a = new StatementNames(12345, 10);
    expect(a.define('x'.repeat(200)).length).toBeLessThan(20);
  });

  it('evicts the least recently used statement past the cap', () => {
    const a = new StatementNames(1, 2);
    const s1 = a.define('s1');
    const s2 = a.define('s2');
    a.use('s1');
    a.define('s3');
    expect(a.size).toBe(2);
    expect(a.takeEvicted()).toEqual([s2]);
    expect(a.use('s1')).toBe(s1);
  });

  it('prepares an evicted statement again when it is used, with its own text', () => {
    const a = new StatementNames(1, 1);
    const rest = Buffer.from('select 1\0\0\0', 'latin1');
    a.define('s1', rest);
    a.define('s2', Buffer.from('select 2\0\0\0', 'latin1'));
    expect(a.defined).toBe(2);
    const again = a.use('s1');
    const [parse] = a.takeReprepares().parses;
    expect(parse?.toString('latin1', 5)).toBe(`${again}\0select 1\0\0\0`);
    expect(a.takeReprepares().parses).toEqual([]);
    expect(a.size).toBe(1);
  });

  it('forgets the oldest definitions past its bounds, and closed ones at once', () => {
    const a = new StatementNames(1, 1, 2);
    a.define('s1');
    a.define('s2');
    a.define('s3');
    expect(a.defined).toBe(2);
    a.closeNow('s3');
    expect(a.defined).toBe(1);
    a.use('s1');
    expect(a.takeReprepares().parses).toEqual([]);
  });

  it('knows the names the client has, resident or to prepare again, until they are closed', () => {
    const a = new StatementNames(1, 1);
    const s1 = a.define('s1', Buffer.from('select 1\0\0\0', 'latin1'));
    a.define('s2');
    expect(a.has('s1')).toBe(true); // closed in the session by the cap, still the client's
    expect(a.has('s2')).toBe(true);
    expect(a.has('s3')).toBe(false);
    expect(a.has('S2')).toBe(false);
    // DEALLOCATE s1: nothing to close in the session, and the name is free again.
    expect(a.owns(a.closeNow('s1'))).toBe(false);
    expect(a.has('s1')).toBe(false);
    expect(a.define('s1')).not.toBe(s1);
  });

  it('maps unknown names to a missing statement and restores them in messages', () => {
    const a = new StatementNames(7, 10);
    const backend = a.use('nope');
    expect(a.restore(`prepared statement "${backend}" does not exist`)).toBe(
      'prepared statement "nope" does not exist',
    );
  });
});

describe('StatementNames.needsReprepare', () => {
  const bind = (name: string) => tagged(Frontend.Bind, '\0', `${name}\0`, [0, 0, 0, 0, 0, 0]);
  const describeS = (name: string) => tagged(Frontend.Describe, 'S', `${name}\0`);

  it('is true for a Bind or Describe of a statement the session closed, until it is prepared again', () => {
    const a = new StatementNames(1, 1);
    a.define('s1');
    a.define('s2'); // s1 closed in the session (cap 1)
    expect(a.needsReprepare(bind('s1'))).toBe(true);
    expect(a.needsReprepare(describeS('s1'))).toBe(true);
    expect(a.needsReprepare(bind('s2'))).toBe(false);
    expect(a.needsReprepare(bind('never'))).toBe(false);
    expect(a.needsReprepare(bind(''))).toBe(false);
    expect(a.needsReprepare(tagged(Frontend.Describe, 'P', '\0'))).toBe(false);
    const backend = a.use('s1');
    expect(a.takeReprepares().parses).toHaveLength(1);
    expect(a.needsReprepare(bind('s1'))).toBe(false);
    // Its re-preparation failed: prepared again at the next use.
    a.notInSession(backend);
    expect(a.needsReprepare(bind('s1'))).toBe(true);
  });
});

describe('renameStatement', () => {
  it('renames Parse, Bind, Describe and Close but not portals', () => {
    const names = new StatementNames(3, 10);
    const parse = renameStatement(tagged(Frontend.Parse, 'P_0\0select 1\0\0\0'), names);
    expect(parse.toString('latin1', 5)).toBe('_g3_0\0select 1\0\0\0');
    expect(parse.readUInt32BE(1)).toBe(parse.length - 1);
    const bind = renameStatement(tagged(Frontend.Bind, 'portal\0P_0\0\0\0\0\0\0\0'), names);
    expect(bind.toString('latin1', 5)).toBe('portal\0_g3_0\0\0\0\0\0\0\0');
    expect(renameStatement(tagged(Frontend.Describe, 'SP_0\0'), names).toString('latin1', 5)).toBe(
      'S_g3_0\0',
    );
    expect(renameStatement(tagged(Frontend.Describe, 'Pportal\0'), names).toString('latin1', 5)).toBe(
      'Pportal\0',
    );
    expect(renameStatement(tagged(Frontend.Close, 'SP_0\0'), names).toString('latin1', 5)).toBe('S_g3_0\0');
    expect(names.size).toBe(1); // until the engine answers the Close
    names.closesAnswered(tagged(0x33));
    expect(names.size).toBe(0);
  });

  it('takes a Close as done only once the engine ran it (an error earlier skips it)', () => {
    const names = new StatementNames(3, 10);
    names.define('a');
    names.define('b');
    const complete = tagged(0x33);
    const error = tagged(0x45, 'SERROR\0C22012\0\0');
    // Close P, Close a ran; the error skipped Close b.
    for (const m of ['P\0', 'Sa\0', 'Sb\0']) renameStatement(tagged(Frontend.Close, m), names);
    // Answered in parts, as a streamed reply is.
    names.closesAnswered(complete);
    names.closesAnswered(Buffer.concat([complete, tagged(0x44, [0, 0]), error, tagged(0x5a, 'I')]));
    expect(names.has('a')).toBe(false);
    expect(names.has('b')).toBe(true);
    // One its unit never answered (interrupted) did not run.
    renameStatement(tagged(Frontend.Close, 'Sb\0'), names);
    names.closesUnanswered();
    names.closesAnswered(complete);
    expect(names.has('b')).toBe(true);
    // Closed and defined again in the same unit: the new one stays.
    renameStatement(tagged(Frontend.Close, 'Sb\0'), names);
    const again = names.define('b', Buffer.from('select 2\0\0\0', 'latin1'));
    names.closesAnswered(Buffer.concat([complete, tagged(0x31), tagged(0x5a, 'I')]));
    expect(names.use('b')).toBe(again);
  });

  it('leaves the unnamed statement alone', () => {
    const names = new StatementNames(3, 10);
    const parse = tagged(Frontend.Parse, '\0select 1\0\0\0');
    expect(renameStatement(parse, names)).toBe(parse);
  });

  it('builds Close messages followed by Sync', () => {
    const out = closeStatements(['_g1_0']);
    expect(out.toString('latin1')).toContain('S_g1_0\0');
    expect(out[out.length - 5]).toBe(Frontend.Sync);
  });
});

describe('restoreNames', () => {
  it('rewrites backend names inside error responses only', () => {
    const names = new StatementNames(4, 10);
    const backend = names.define('mine');
    const error = tagged(0x45, `SERROR\0C42P05\0Mprepared statement "${backend}" already exists\0\0`);
    const ready = tagged(0x5a, 'I');
    const out = Buffer.from(restoreNames(Buffer.concat([error, ready]), names));
    expect(out.toString('latin1')).toContain('prepared statement "mine" already exists');
    const length = out.readUInt32BE(1);
    expect(out[1 + length]).toBe(0x5a);
  });
});
