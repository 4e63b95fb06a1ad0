import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ThrottledWarning } from './log-throttle.js';

function recorder() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

describe('ThrottledWarning', () => {
  it('logs a source once per interval, then counts what it held back on the next line', () => {
    const { logger, lines } = recorder();
    const warning = new ThrottledWarning(logger, 'refused', 1_000);
    for (let i = 0; i < 5; i++) warning.warn('10.0.0.1', { peer: '10.0.0.1' }, 100 + i);
    warning.warn('10.0.0.2', { peer: '10.0.0.2' }, 200);
    expect(lines.map((l) => l.peer)).toEqual(['10.0.0.1', '10.0.0.2']);
    warning.warn('10.0.0.1', { peer: '10.0.0.1' }, 1_200);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ peer: '10.0.0.1', suppressed: 4, msg: 'refused' });
    expect(lines[0]?.suppressed).toBeUndefined();
  });

  it('remembers a bounded number of sources', () => {
    const { logger, lines } = recorder();
    const warning = new ThrottledWarning(logger, 'refused', 60_000, 2);
    warning.warn('a', {}, 0);
    warning.warn('b', {}, 1);
    warning.warn('c', {}, 2); // forgets a
    warning.warn('a', {}, 3); // logged again
    warning.warn('c', {}, 4); // still remembered
    expect(lines).toHaveLength(4);
  });
});
