// /dashboard: a page that draws the live actor graph (socket.io /inspect) as SVG. The page and
// its two scripts are served unsigned — they are static and hold nothing; the page asks for an
// admin keypair, keeps it in sessionStorage and uses it only to sign the /inspect handshake in
// the browser (HMAC-SHA256, as schema/signing.ts). The socket.io browser client comes from the
// installed socket.io-client package.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { App } from './app.ts';

const here = dirname(new URL(import.meta.url).pathname);

// Static, same-origin only: scripts from here, the WebSocket back to here, no framing.
const CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'unsafe-inline'", "connect-src 'self'", "img-src 'self' data:",
  "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

/** Register GET /dashboard (the page), /dashboard/dashboard.js and /dashboard/socket.io.min.js. */
export function dashboardRoutes(app: App): void {
  // Read once at start: a missing file fails the manager's start, not a user's page load.
  const html = readFileSync(join(here, 'dashboard.html'), 'utf8');
  const js = readFileSync(join(here, 'dashboard.js'), 'utf8');
  const ioClientDir = dirname(createRequire(import.meta.url).resolve('socket.io-client/package.json'));
  const ioClient = readFileSync(join(ioClientDir, 'dist', 'socket.io.min.js'), 'utf8');

  const assets: Array<[string, string, string]> = [
    ['/dashboard', 'text/html; charset=utf-8', html],
    ['/dashboard/', 'text/html; charset=utf-8', html],
    ['/dashboard/dashboard.js', 'text/javascript; charset=utf-8', js],
    ['/dashboard/socket.io.min.js', 'text/javascript; charset=utf-8', ioClient],
  ];
  for (const [url, type, body] of assets) {
    app.get(url, { config: { unsigned: true } }, async (_req, reply) => reply
      .header('content-type', type)
      .header('cache-control', 'no-store')
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('content-security-policy', CSP)
      .send(body));
  }
}
