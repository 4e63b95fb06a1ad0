import { describe, expect, it } from 'vitest';
import { refusedOrigin } from './request-origin.js';

describe('refusedOrigin', () => {
  it.each([
    [{ host: '127.0.0.1:5480' }, false],
    [{ host: 'localhost:5480' }, false],
    [{ host: '[::1]:5480' }, false],
    [{ host: '10.0.0.5:5480' }, false],
    [{ host: 'app.localhost' }, false],
    [{ host: '127.0.0.1:5480', origin: 'http://127.0.0.1:5480' }, false],
    [{ host: 'admin.example.com', origin: 'https://admin.example.com' }, true],
    [{ host: 'admin.example.com' }, true],
    [{}, false],
  ])('lets %j through (token: %s)', (headers, hasToken) => {
    expect(refusedOrigin(headers, hasToken)).toBeUndefined();
  });

  it.each([
    [{ host: '127.0.0.1:5480', origin: 'https://evil.example' }, false],
    [{ host: '127.0.0.1:5480', origin: 'http://127.0.0.1:9999' }, false],
    [{ host: '127.0.0.1:5480', origin: 'null' }, false],
    [{ host: 'admin.example.com', origin: 'https://evil.example' }, true],
    // DNS rebinding: the page's own name, now resolving to 127.0.0.1.
    [{ host: 'evil.attacker.com:5480', origin: 'http://evil.attacker.com:5480' }, false],
    [{ host: 'evil.attacker.com:5480' }, false],
  ])('refuses %j (token: %s)', (headers, hasToken) => {
    expect(refusedOrigin(headers, hasToken)).toMatch(/refused|only requests/);
  });
});
