import { describe, expect, it } from 'vitest';
import { readyForQuery } from '../wire/protocol.js';
import { mayAcknowledgeCommit } from './archive-gate.js';
import { commandComplete } from './session-messages.js';

describe('mayAcknowledgeCommit', () => {
  const cc = (tag: string) => Buffer.from(commandComplete(tag));
  it('a COMMIT tag anywhere acknowledges a commit', () => {
    expect(mayAcknowledgeCommit(Buffer.concat([cc('COMMIT'), cc('SELECT 1')]), false)).toBe(true);
    expect(mayAcknowledgeCommit(Buffer.concat([cc('COMMIT'), readyForQuery('T')]), true)).toBe(true);
  });
  it('an autocommit write ends its last part idle', () => {
    expect(mayAcknowledgeCommit(Buffer.concat([cc('INSERT 0 1'), readyForQuery('I')]), true)).toBe(true);
  });
  it('a write inside a transaction acknowledges nothing yet', () => {
    expect(mayAcknowledgeCommit(Buffer.concat([cc('UPDATE 1'), readyForQuery('T')]), true)).toBe(false);
    expect(mayAcknowledgeCommit(cc('INSERT 0 1'), false)).toBe(false);
    expect(mayAcknowledgeCommit(Buffer.concat([cc('ROLLBACK'), readyForQuery('E')]), true)).toBe(false);
  });
});
