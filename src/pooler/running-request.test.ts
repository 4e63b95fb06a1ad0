import { describe, expect, it } from 'vitest';
import { query } from '../wire/protocol.js';
import { RunningRequest } from './running-request.js';

/** A WAL gate as the engine keeps it: writes begun, and whether the gate is closed. */
function gate() {
  const state = { begun: 0n, closed: false };
  return {
    state,
    holdWal: () => {
      state.closed = true;
      return state.begun;
    },
    releaseWal: () => {
      state.closed = false;
    },
    walWritesBegun: () => state.begun,
  };
}

describe('RunningRequest', () => {
  it('holds a request that began no WAL write: stopping it cannot lose a commit', () => {
    const g = gate();
    const r = new RunningRequest();
    r.start(g, 'I', query('select pg_sleep(10)'));
    expect(r.holdUnlessCommitting()).toBe(false);
    expect(g.state.closed).toBe(true);
  });

  it('lets a request that may be committing go on', () => {
    const g = gate();
    const r = new RunningRequest();
    r.start(g, 'I', query('insert into t values (1)'));
    g.state.begun++;
    expect(r.holdUnlessCommitting()).toBe(true);
    expect(g.state.closed).toBe(false);
    r.start(g, 'T', query('COMMIT'));
    g.state.begun++;
    expect(r.holdUnlessCommitting()).toBe(true);
  });

  it('holds a request inside a transaction block that cannot end it', () => {
    const g = gate();
    const r = new RunningRequest();
    r.start(g, 'T', query('update t set v = v + 1'));
    g.state.begun++;
    expect(r.holdUnlessCommitting()).toBe(false);
    expect(g.state.closed).toBe(true);
  });

  it('is over once the request ends, and not for a request that runs on', async () => {
    const g = gate();
    const r = new RunningRequest();
    r.start(g, 'I', query('select 1'));
    setTimeout(() => r.end(), 10);
    expect(await r.endsWithin(5_000)).toBe(true);
    r.start(g, 'I', query('select 1'));
    expect(await r.endsWithin(20)).toBe(false);
    r.end();
    expect(r.holdUnlessCommitting()).toBe(false);
  });
});
