import type { TestServer } from './server.js';

/**
 * The admin API of a test server over TCP (no token in tests): a Buffer body is sent as is, any
 * other body as JSON; the answer comes back with its status and parsed JSON body.
 */
export function adminClient(t: TestServer) {
  return async <T>(method: string, url: string, body?: unknown): Promise<{ status: number; json: T }> => {
    const init: RequestInit = { method };
    if (Buffer.isBuffer(body)) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'content-type': 'application/json' };
    }
    const res = await fetch(`http://127.0.0.1:${t.server.adminPort}${url}`, init);
    const text = await res.text();
    return { status: res.status, json: (text === '' ? undefined : JSON.parse(text)) as T };
  };
}
