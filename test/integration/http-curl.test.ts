import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

const execFileAsync = promisify(execFile);

/** `POST /sql` with the real curl: what a hand-written client or a hostile one sees. */
describe('POST /sql with curl', () => {
  let gw: TestServer;
  let conn = '';

  beforeAll(async () => {
    gw = await startTestServer({ MAX_HTTP_RESPONSE: '64KB', AUTH_MAX_DELAY: '0' });
    const password = await gw.createDatabase('curly');
    conn = `postgres://postgres:${password}@curly.db.example.com/postgres`;
  });
  afterAll(() => gw?.close());

  /** Runs curl; returns the status, the response headers (lowercased) and the body. */
  async function curl(args: string[]): Promise<{ status: number; headers: string; body: string }> {
    const { stdout } = await execFileAsync(
      'curl',
      [
        '-sS',
        '--cacert',
        gw.caPath,
        '-D',
        '-',
        '-w',
        '\n%{http_code}',
        ...args,
        `https://localhost:${gw.httpPort}/sql`,
      ],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    const split = stdout.indexOf('\r\n\r\n');
    const headers = stdout.slice(0, split).toLowerCase();
    const rest = stdout.slice(split + 4);
    const cut = rest.lastIndexOf('\n');
    return { status: Number(rest.slice(cut + 1)), headers, body: rest.slice(0, cut) };
  }
  const post = (body: string, extra: string[] = []) =>
    curl([
      '-H',
      `Neon-Connection-String: ${conn}`,
      '-H',
      'Content-Type: application/json',
      ...extra,
      '--data-binary',
      body,
    ]);

  it('runs a single query', async () => {
    const res = await post(
      JSON.stringify({ query: 'select $1::int + 1 as n, null::text as z', params: ['41'] }),
    );
    expect(res.status).toBe(200);
    expect(res.headers).toContain('access-control-allow-origin: *');
    expect(JSON.parse(res.body)).toEqual({
      command: 'SELECT',
      rowCount: 1,
      rowAsArray: false,
      fields: [
        {
          name: 'n',
          dataTypeID: 23,
          tableID: 0,
          columnID: 0,
          dataTypeSize: 4,
          dataTypeModifier: -1,
          format: 'text',
        },
        {
          name: 'z',
          dataTypeID: 25,
          tableID: 0,
          columnID: 0,
          dataTypeSize: -1,
          dataTypeModifier: -1,
          format: 'text',
        },
      ],
      rows: [{ n: '42', z: null }],
    });
    const arrays = await post(JSON.stringify({ query: 'select 1 as a, 2 as b' }), [
      '-H',
      'Neon-Array-Mode: true',
    ]);
    expect(JSON.parse(arrays.body)).toMatchObject({ rowAsArray: true, rows: [['1', '2']] });
  });

  it('rolls a batch back on error', async () => {
    await post(JSON.stringify({ query: 'create table ledger (v int)' }));
    const res = await post(
      JSON.stringify({
        queries: [{ query: 'insert into ledger values ($1)', params: ['1'] }, { query: 'select 1/0' }],
      }),
    );
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({
      code: '22012',
      message: 'division by zero',
      severity: 'ERROR',
    });
    const ok = await post(
      JSON.stringify({
        queries: [{ query: 'insert into ledger values (2)' }, { query: 'select v from ledger' }],
      }),
      ['-H', 'Neon-Batch-Isolation-Level: Serializable'],
    );
    expect(ok.status).toBe(200);
    const { results } = JSON.parse(ok.body);
    expect(results).toHaveLength(2);
    expect(results[0]).toMatchObject({ command: 'INSERT', rowCount: 1 });
    expect(results[1].rows).toEqual([{ v: '2' }]);
  });

  it('answers the CORS preflight', async () => {
    const res = await curl([
      '-X',
      'OPTIONS',
      '-H',
      'Origin: https://app.example',
      '-H',
      'Access-Control-Request-Method: POST',
    ]);
    expect(res.status).toBe(204);
    expect(res.headers).toContain('access-control-allow-origin: *');
    expect(res.headers).toMatch(/access-control-allow-headers: .*neon-connection-string.*authorization/);
  });

  it('returns 400 with the error fields, 507 for a response over MAX_HTTP_RESPONSE', async () => {
    const bad = await post(JSON.stringify({ query: 'select nope from nowhere' }));
    expect(bad.status).toBe(400);
    const error = JSON.parse(bad.body);
    expect(error).toMatchObject({ code: '42P01', position: '18', severity: 'ERROR' });
    expect(Object.values(error)).not.toContain(null);
    const big = await post(
      JSON.stringify({ query: "select repeat('x', 1000) from generate_series(1, 1000)" }),
    );
    expect(big.status).toBe(507);
    expect(JSON.parse(big.body).message).toMatch(/too large/);
    // The limit is the JSON's size: a control character takes 6 bytes there, column names and
    // descriptions count too (a small request must not build a response many times the limit).
    const escaped = await post(JSON.stringify({ query: 'select repeat(chr(1), 20000) as v' }));
    expect(escaped.status).toBe(507);
    const fits = await post(JSON.stringify({ query: 'select repeat(chr(1), 5000) as v' }));
    expect(fits.status).toBe(200);
    expect(Buffer.byteLength(fits.body)).toBeLessThanOrEqual(64 * 1024);
    const columns = Array.from({ length: 200 }, (_, i) => `c${i}_${'x'.repeat(55)} int`).join(', ');
    expect((await post(JSON.stringify({ query: `create table wide (${columns})` }))).status).toBe(200);
    const wide = await post(
      JSON.stringify({
        queries: Array.from({ length: 20 }, () => ({ query: 'select * from wide', params: [] })),
      }),
    );
    expect(wide.status).toBe(507);
    // The session is usable afterwards.
    expect((await post(JSON.stringify({ query: 'select 1 as one' }))).status).toBe(200);
  });

  it('commits a batch only when its answer is whole: a 507 or a failing COMMIT did nothing', async () => {
    const setup = await post(
      JSON.stringify({
        query: 'create table kept (v int unique deferrable initially deferred)',
      }),
    );
    expect(setup.status).toBe(200);
    const batch = (queries: string[]) =>
      post(JSON.stringify({ queries: queries.map((query) => ({ query, params: [] })) }));
    const big = await batch([
      'insert into kept values (1)',
      "select repeat('x', 1000) from generate_series(1, 1000)",
    ]);
    expect(big.status).toBe(507);
    const duplicate = await batch(['insert into kept values (2)', 'insert into kept values (2)']);
    expect(duplicate.status).toBe(400);
    expect(JSON.parse(duplicate.body)).toMatchObject({ code: '23505' });
    const ok = await batch(['insert into kept values (3)', 'select count(*)::int as n from kept']);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).results[1].rows).toEqual([{ n: '1' }]);
  });

  it('refuses hostile input: large bodies (413), malformed JSON and headers (400)', async () => {
    const bodyFile = path.join(gw.root, 'huge.json');
    await writeFile(bodyFile, JSON.stringify({ query: `select '${'x'.repeat(1_100_000)}'` }));
    const huge = await post(`@${bodyFile}`);
    expect(huge.status).toBe(413);
    const malformed = await post('{"query": ');
    expect(malformed.status).toBe(400);
    expect(JSON.parse(malformed.body).message).toMatch(/JSON/);
    const wrongShape = await post(JSON.stringify({ query: 1 }));
    expect(wrongShape.status).toBe(400);
    const noConn = await curl(['--data-binary', '{"query":"select 1"}']);
    expect(noConn.status).toBe(400);
    const wrongPassword = await curl([
      '-H',
      'Neon-Connection-String: postgres://postgres:nope-nope-nope@curly.db.example.com/postgres',
      '--data-binary',
      '{"query":"select 1"}',
    ]);
    expect(wrongPassword.status).toBe(400);
    expect(JSON.parse(wrongPassword.body)).toMatchObject({ code: '28P01' });
    const get = await curl(['-X', 'GET']);
    expect(get.status).toBe(405);
  });
});
