import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { ensureTemplate } from '../../src/pgdata/template.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A PGlite PGDATA made once per run; tests copy it instead of running initdb. */
    templateDir: string;
  }
}

export default async function setup(project: TestProject) {
  const root = await mkdtemp(path.join(tmpdir(), 'pgl-template-'));
  const templateDir = await ensureTemplate(path.join(root, 'template'));
  project.provide('templateDir', templateDir);
  return async () => {
    await rm(root, { recursive: true, force: true });
  };
}
