import type { Context, Hono } from 'hono';
import type { AdminEnv } from '../env.js';
import { isAuthorized, signIn, signOut, tokenMatches } from './auth.js';
import { BundleUnavailableError, dashboardScript } from './bundle.js';
import { dashboardPage, signInPage } from './page.js';

/**
 * GET /dashboard (the page, or a sign-in form with 401), /dashboard?token=<t> and the form's
 * POST /dashboard/sign-in (set the cookie, redirect to /dashboard), /dashboard/app.js (the
 * bundled script), POST /dashboard/sign-out. Registered before the admin API's authentication,
 * which the page's script then passes with the cookie.
 */
export function registerDashboard(app: Hono<AdminEnv>, token: string | undefined): void {
  const allowed = (c: Context<AdminEnv>) => !token || c.env?.trusted === true || isAuthorized(c, token);
  const security = {
    'Content-Security-Policy':
      "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-store',
  };

  const signInWith = (c: Context<AdminEnv>, given: string | undefined) => {
    if (token && given !== undefined && tokenMatches(given, token)) {
      signIn(c, token);
      return c.redirect('/dashboard', 303);
    }
    return c.html(signInPage(given === undefined ? undefined : 'That token is not right.'), 401, security);
  };

  app.get('/dashboard', (c) => {
    const given = c.req.query('token');
    if (given !== undefined && token) return signInWith(c, given);
    if (!allowed(c)) return c.html(signInPage(), 401, security);
    return c.html(dashboardPage(), 200, security);
  });

  app.post('/dashboard/sign-in', async (c) => {
    const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
    const given = typeof form.token === 'string' ? form.token : '';
    if (!token) return c.redirect('/dashboard', 303);
    return signInWith(c, given);
  });

  app.post('/dashboard/sign-out', (c) => {
    signOut(c);
    return c.redirect('/dashboard', 303);
  });

  app.get('/dashboard/app.js', async (c) => {
    if (!allowed(c)) return c.json({ error: 'unauthorized' }, 401);
    try {
      const script = await dashboardScript();
      return c.body(script, 200, { ...security, 'Content-Type': 'text/javascript; charset=utf-8' });
    } catch (err) {
      if (err instanceof BundleUnavailableError) return c.json({ error: err.message }, 503);
      throw err;
    }
  });
}
