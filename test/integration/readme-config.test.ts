import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENV_VARIABLES } from '../../src/config.js';

/** The README's configuration table names exactly the variables src/config.ts reads. */
describe('README configuration table', () => {
  it('lists every environment variable the gateway reads, and no other', async () => {
    const readme = await readFile(path.join(import.meta.dirname, '../../README.md'), 'utf8');
    const section = readme.slice(
      readme.indexOf('## Configuration'),
      readme.indexOf('\n## ', readme.indexOf('## Configuration') + 5),
    );
    const documented = new Set<string>();
    for (const line of section.split('\n')) {
      if (!line.startsWith('| `')) continue;
      const first = line.split('|')[1] ?? '';
      for (const m of first.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) documented.add(m[1] as string);
    }
    expect([...documented].sort()).toEqual([...ENV_VARIABLES].sort());
  });
});
