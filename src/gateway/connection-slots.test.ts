import { describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { ConnectionSlots } from './connection-slots.js';

describe('ConnectionSlots', () => {
  const logger = createLogger({ level: 'silent', pretty: false });

  it('serves up to the cap, refuses a margin past it, then drops; a release frees a slot', () => {
    const slots = new ConnectionSlots(20, logger);
    expect(slots.margin).toBe(16);
    const got = Array.from({ length: 40 }, () => slots.admit('a'));
    expect(got.filter((a) => a === 'serve')).toHaveLength(20);
    expect(got.slice(20, 36).every((a) => a === 'refuse')).toBe(true);
    expect(got.slice(36).every((a) => a === 'drop')).toBe(true);
    expect(slots.count).toBe(36);
    for (let i = 0; i < 17; i++) slots.release();
    expect(slots.admit('a')).toBe('serve');
  });

  it('keeps a tenth of a large cap as its margin', () => {
    expect(new ConnectionSlots(10_000, logger).margin).toBe(1_000);
  });
});
