import { isIP } from 'node:net';

/**
 * Whom an admin request may come from, judged by its Host and Origin headers (pure).
 *
 * Without ADMIN_TOKEN the admin API trusts anyone who can reach it, which is meant to be the
 * machine itself. A web page open in a browser on that machine can reach it too: a cross-origin
 * POST (text/plain needs no preflight) could create databases or replace passwords, and a page
 * whose DNS name is re-bound to 127.0.0.1 could even read the answers. So:
 * - a request whose Origin names another host than its Host is refused (browsers send Origin on
 *   every cross-origin request that is not a plain navigation; curl and the CLI send none);
 * - without a token, the Host must be an IP address or `localhost`: a re-bound name is refused.
 * With a token, the dashboard's sign-in cookie is SameSite=Strict and pages cannot send it.
 */
export function refusedOrigin(
  headers: { host?: string | undefined; origin?: string | undefined },
  hasToken: boolean,
): string | undefined {
  const host = headers.host?.trim().toLowerCase();
  if (headers.origin !== undefined) {
    let origin: string | undefined;
    try {
      origin = new URL(headers.origin).host.toLowerCase();
    } catch {
      origin = undefined;
    }
    if (!origin || origin !== host) return 'cross-origin requests are refused';
  }
  if (!hasToken && host !== undefined && !isLocalName(host))
    return 'without ADMIN_TOKEN the admin API answers only requests addressed to an IP address or localhost';
  return undefined;
}

/** `host[:port]` names an IP address or localhost. */
function isLocalName(host: string): boolean {
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d*$/, '');
  return isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost');
}
