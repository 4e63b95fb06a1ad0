import { describe, expect, it } from 'vitest';
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
    r.start(g);
    expect(r.holdUnlessWriting()).toBe(false);
    expect(g.state.closed).toBe(true);
  });

  it('lets a request that began writing WAL go on (it may be committing)', () => {
    const g = gate();
    const r = new RunningRequest();
    r.start(g);
    g.state.begun++;
    expect(r.holdUnlessWriting()).toBe(true);
    expect(g.state.closed).toBe(false);
    r.hold();
    expect(g.state.closed).toBe(true);
  });

  it('counts only the WAL writes begun since the request started', () => {
    const g = gate();
    g.state.begun = 5n;
    const r = new RunningRequest();
    r.start(g);
    expect(r.holdUnlessWriting()).toBe(false);
  });

  it('is over once the request ends, and not for a request that runs on', async () => {
    const g = gate();
    const r = new RunningRequest();
    r.start(g);
    setTimeout(() => r.end(), 10);
    expect(await r.endsWithin(5_000)).toBe(true);
    r.start(g);
    expect(await r.endsWithin(20)).toBe(false);
    r.end();
    expect(r.holdUnlessWriting()).toBe(false);
    expect(g.state.closed).toBe(false);
  });
});
