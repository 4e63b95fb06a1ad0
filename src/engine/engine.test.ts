import { describe, expect, it } from 'vitest';
import { query, readyForQuery, syncMessage } from '../wire/protocol.js';
import { replyProblem } from './engine.js';

const flush = Buffer.from([0x48, 0, 0, 0, 4]);
const parseComplete = Buffer.from([0x31, 0, 0, 0, 4]);

describe('replyProblem', () => {
  it('accepts a reply that ends with ReadyForQuery after a Query or a Sync', () => {
    expect(replyProblem(query('select 1'), readyForQuery('I'))).toBeUndefined();
    expect(replyProblem(syncMessage(), Buffer.concat([parseComplete, readyForQuery('T')]))).toBeUndefined();
  });

  it('accepts a Flush answered with anything well formed, even nothing', () => {
    expect(replyProblem(flush, parseComplete)).toBeUndefined();
    expect(replyProblem(flush, new Uint8Array())).toBeUndefined();
  });

  it('finds empty, truncated, malformed and unfinished replies', () => {
    expect(replyProblem(query('x'), new Uint8Array())).toMatch(/empty/);
    expect(replyProblem(query('x'), readyForQuery('I').subarray(0, 4))).toMatch(/truncated/);
    expect(replyProblem(query('x'), Buffer.from([0x5a, 0, 0, 0, 1, 0x49]))).toMatch(/malformed/);
    expect(replyProblem(query('x'), parseComplete)).toMatch(/ReadyForQuery/);
  });
});
