import { Agent, request } from 'node:https';
import { neon, neonConfig } from '@neondatabase/serverless';
import { WebSocket } from 'ws';
import type { TestServer } from './server.js';

/**
 * The Neon serverless driver pointed at a test server's front door. Its fetch trusts the test CA
 * (the dev certificate names localhost); keep-alive like a browser or an edge runtime.
 */

/** A `fetch` over node:https that trusts `ca`, enough for the driver (status, json, text). */
export function caFetch(ca: Buffer): typeof fetch {
  const agent = new Agent({ ca, keepAlive: true });
  return (async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const headers = Object.fromEntries(new Headers(init.headers).entries());
    const body = typeof init.body === 'string' ? init.body : undefined;
    return new Promise<Response>((resolve, reject) => {
      const req = request(url, { method: init.method ?? 'GET', headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const nullBody = status === 204 || status === 304;
          resolve(
            new Response(nullBody ? null : Buffer.concat(chunks), {
              status,
              headers: Object.entries(res.headers).flatMap(([k, v]) =>
                v === undefined ? [] : (Array.isArray(v) ? v : [v]).map((x) => [k, x] as [string, string]),
              ),
            }),
          );
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }) as typeof fetch;
}

/** Points the driver's fetch at the server (module-wide neonConfig, one server per test file). */
export function useFrontDoor(gw: TestServer): void {
  neonConfig.fetchEndpoint = () => `https://localhost:${gw.httpPort}/sql`;
  neonConfig.fetchFunction = caFetch(gw.ca);
}

/** The connection string the driver is given: the database's name routes, as in production. */
export function neonUrl(id: string, password: string, user = 'postgres'): string {
  return `postgres://${user}:${encodeURIComponent(password)}@${id}.db.example.com/postgres`;
}

export { neon };

/** A `ws` WebSocket class trusting the test CA, for `neonConfig.webSocketConstructor`. */
export function caWebSocket(ca: Buffer): typeof WebSocket {
  class Trusting extends WebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols, { ca });
    }
  }
  return Trusting as unknown as typeof WebSocket;
}

/** Points the driver's Pool/Client at the server's WebSocket front door (wss, pipelined password). */
export function useWebSocketFrontDoor(gw: TestServer): void {
  neonConfig.webSocketConstructor = caWebSocket(gw.ca);
  neonConfig.wsProxy = (host, port) => `localhost:${gw.httpPort}/v2?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = true;
  neonConfig.pipelineConnect = 'password';
}
