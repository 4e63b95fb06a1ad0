import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PreLoginBudget } from './prelogin-budget.js';

describe('PreLoginBudget', () => {
  it('lets each connection hold its allowance without drawing on the pool', () => {
    const budget = new PreLoginBudget(100, 10);
    const accounts = Array.from({ length: 50 }, () => budget.open());
    for (const a of accounts) expect(a.receive(10)).toBe(true);
    expect(budget.drawn).toBe(0);
  });

  it('refuses the bytes that would overdraw the pool, and gives it back on release', () => {
    const budget = new PreLoginBudget(100, 10);
    const a = budget.open();
    const b = budget.open();
    expect(a.receive(70)).toBe(true);
    expect(budget.drawn).toBe(60);
    expect(b.receive(50)).toBe(true);
    expect(budget.drawn).toBe(100);
    expect(b.receive(1)).toBe(false);
    expect(budget.drawn).toBe(100);
    a.release();
    a.release();
    expect(budget.drawn).toBe(40);
    expect(a.receive(1_000)).toBe(true); // a released account counts nothing more
    expect(budget.drawn).toBe(40);
    expect(b.receive(60)).toBe(true);
    b.release();
    expect(budget.drawn).toBe(0);
  });

  it('never draws more than the pool, and returns to zero, whatever the order (property)', () => {
    const step = fc.record({ who: fc.nat({ max: 5 }), bytes: fc.nat({ max: 80 }), release: fc.boolean() });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const budget = new PreLoginBudget(200, 16);
        const accounts = Array.from({ length: 6 }, () => budget.open());
        for (const { who, bytes, release } of steps) {
          const account = accounts[who];
          if (!account) continue;
          if (release) account.release();
          else account.receive(bytes);
          expect(budget.drawn).toBeGreaterThanOrEqual(0);
          expect(budget.drawn).toBeLessThanOrEqual(200);
        }
        for (const a of accounts) a.release();
        expect(budget.drawn).toBe(0);
      }),
    );
  });
});
