import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The admin API without ADMIN_TOKEN trusts whoever reaches it on loopback, which includes web
 * pages in a browser on the same machine: a page from another origin (a cross-origin POST) or
 * one whose DNS name was re-bound to 127.0.0.1 is refused with 403.
 */
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

function request(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: t.server.adminPort, method, path, headers },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => {
          data += c.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('admin API without ADMIN_TOKEN', () => {
  it('refuses a cross-origin POST from a web page (text/plain, no preflight) with 403', async () => {
    const res = await request(
      'POST',
      '/v1/databases',
      { origin: 'https://evil.example', 'content-type': 'text/plain' },
      '{"id":"csrf"}',
    );
    expect(res.status).toBe(403);
    expect((await request('GET', '/v1/databases/csrf', {})).status).toBe(404);
  });

  it('refuses a request addressed to a DNS name (re-bound to 127.0.0.1) with 403', async () => {
    const res = await request('GET', '/v1/databases', { host: `evil.attacker.com:${t.server.adminPort}` });
    expect(res.status).toBe(403);
    expect(res.body).not.toMatch(/"databases"/);
  });

  it('serves curl-like requests, same-origin pages, and /healthz whatever the headers', async () => {
    const created = await request('POST', '/v1/databases', {}, '{"id":"plainly"}');
    expect(created.status).toBe(201);
    const origin = `http://127.0.0.1:${t.server.adminPort}`;
    expect((await request('GET', '/v1/databases/plainly', { origin })).status).toBe(200);
    expect((await request('GET', '/healthz', { host: 'anything.example' })).status).toBe(200);
  });
});
