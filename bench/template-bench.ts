import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { generateDevCertificates } from '../src/gateway/certs.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';

/**
 * Creating databases from a template (issue 18): N creates through the admin API of a real node,
 * from a template with tables, a view, an enum and a trigger, next to N plain creates in the same
 * run. The SQL is not run per database (the template's data directory is copied), so the p50 should
 * stay near a plain create's and within 150 ms.
 */

export const TEMPLATE_BENCH = 'template';

const TEMPLATE_SQL = `
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE,
  mood mood NOT NULL DEFAULT 'happy', updated_at timestamptz);
CREATE TABLE notes (id serial PRIMARY KEY, account_id bigint REFERENCES accounts (id), body text NOT NULL);
CREATE VIEW happy_accounts AS SELECT id, email FROM accounts WHERE mood = 'happy';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER accounts_touch BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
`;

export interface TemplateBenchRow {
  case: 'plain create' | 'create from template';
  count: number;
  p50Ms: number;
  p90Ms: number;
  maxMs: number;
}

export interface TemplateBenchResults {
  rows: TemplateBenchRow[];
  /** How long building the template's data directory took (once). */
  templateBuildMs: number;
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;

export async function runTemplateBench(opts: {
  count: number;
  log: (line: string) => void;
}): Promise<TemplateBenchResults> {
  const root = await mkdtemp(path.join(tmpdir(), 'gw-bench-template-'));
  const tlsDir = path.join(root, 'tls');
  await generateDevCertificates({ dir: tlsDir, domain: 'db.example.com' });
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    HTTP_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    DATA_DIR: path.join(root, 'data'),
    TLS_DIR: tlsDir,
    // The base template, kept between runs (its initdb costs seconds).
    TEMPLATE_DIR: path.join(tmpdir(), 'pglite-gateway-bench-base-template'),
    LOG_LEVEL: 'silent',
    LOG_PRETTY: 'false',
  });
  const server = await startServer(config, createLogger({ level: 'silent', pretty: false }));
  const api = async (body: unknown, route = '/v1/databases') => {
    const res = await fetch(`http://127.0.0.1:${server.adminPort}${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.status !== 201) throw new Error(`${route}: ${res.status} ${await res.text()}`);
  };
  try {
    const started = performance.now();
    await api({ name: 'bench', sql: TEMPLATE_SQL }, '/v1/templates');
    const templateBuildMs = Math.round(performance.now() - started);
    const rows: TemplateBenchRow[] = [];
    for (const kind of ['plain create', 'create from template'] as const) {
      const times: number[] = [];
      for (let i = 0; i < opts.count; i++) {
        const t0 = performance.now();
        await api({
          id: `${kind === 'plain create' ? 'p' : 't'}-${i}`,
          password: 'bench-password-1234',
          ...(kind === 'plain create' ? {} : { template: 'bench' }),
        });
        times.push(performance.now() - t0);
      }
      times.sort((a, b) => a - b);
      const row = {
        case: kind,
        count: opts.count,
        p50Ms: Math.round(percentile(times, 50)),
        p90Ms: Math.round(percentile(times, 90)),
        maxMs: Math.round(times.at(-1) ?? 0),
      };
      opts.log(`template bench: ${kind}: p50 ${row.p50Ms} ms, p90 ${row.p90Ms} ms over ${opts.count}`);
      rows.push(row);
    }
    return { rows, templateBuildMs };
  } finally {
    await server.close();
    await rm(root, { recursive: true, force: true });
  }
}

export function renderTemplateReport(r: TemplateBenchResults): string {
  const lines = [
    '## Creating databases from a template',
    '',
    `Through the admin API of one node (SCRAM verifier included), in the same run; the template (2 tables, a view, an enum, a trigger) was built once in ${r.templateBuildMs} ms.`,
    '',
    '| case | creates | p50 ms | p90 ms | max ms |',
    '|---|---|---|---|---|',
    ...r.rows.map((row) => `| ${row.case} | ${row.count} | ${row.p50Ms} | ${row.p90Ms} | ${row.maxMs} |`),
  ];
  return lines.join('\n');
}

export async function appendTemplateReport(file: string, r: TemplateBenchResults): Promise<void> {
  await appendFile(file, `\n${renderTemplateReport(r)}\n`);
}
