import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';

/**
 * Admin authentication for API clients and browsers: `Authorization: Bearer <ADMIN_TOKEN>`, or the
 * dashboard's session cookie. The cookie holds a hash of the token, not the token: it is
 * HttpOnly and SameSite=Strict (no other site can send it, so it cannot be used for CSRF).
 */

export const COOKIE_NAME = 'pglite_gateway_admin';

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time: both sides are hashed to equal length first. */
function same(given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected));
}

/** The cookie's value for a token (a token change signs every browser out). */
export function cookieValue(token: string): string {
  return sha256(`pglite-gateway dashboard:${token}`).toString('hex');
}

export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer (.+)$/i.exec(header ?? '');
  return same(match?.[1] ?? '', token) && match !== null;
}

export function tokenMatches(given: string, token: string): boolean {
  return same(given, token);
}

/** Whether the request carries the token (bearer) or the dashboard's cookie. */
export function isAuthorized(c: Context, token: string): boolean {
  if (bearerMatches(c.req.header('authorization'), token)) return true;
  const cookie = getCookie(c, COOKIE_NAME);
  return cookie !== undefined && same(cookie, cookieValue(token));
}

export function signIn(c: Context, token: string): void {
  setCookie(c, COOKIE_NAME, cookieValue(token), {
    httpOnly: true,
    sameSite: 'Strict',
    path: '/',
    // A browser session; the admin token itself does not expire.
  });
}

export function signOut(c: Context): void {
  setCookie(c, COOKIE_NAME, '', { httpOnly: true, sameSite: 'Strict', path: '/', maxAge: 0 });
}
