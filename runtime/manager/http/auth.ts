// Backend.AI request signing on every route but the unsigned ones (API.md): the Date within 15
// minutes of our clock, the keypair active, the HMAC over exactly what was received.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ExtendedError, Socket } from 'socket.io';
import { AuthorizationFailed, FlotillaError, Forbidden, InvalidAPIParameters } from '../../../schema/errors.ts';
import { parseAuthorization, parseRequestDate, verifySignature } from '../../../schema/signing.ts';
import type { Keypair, Keypairs } from '../keypairs.ts';
import type { App } from './app.ts';

export const MAX_CLOCK_SKEW_MS = 15 * 60_000;

declare module 'fastify' {
  interface FastifyRequest {
    keypair?: Keypair;
    /** The access key the request acts for: the caller's own, or (admins) `owner_access_key`. */
    owner?: string;
  }
}

export interface SignedParts {
  method: string;
  /** The raw request target, exactly as received. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  query?: Record<string, unknown>;
  body?: unknown;
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** Verify a signed request (HTTP route or WebSocket upgrade): the keypair, and the owner it acts for. */
export async function verifySigned(keypairs: Keypairs, r: SignedParts): Promise<{ keypair: Keypair; owner: string }> {
  const parsed = parseAuthorization(first(r.headers.authorization));
  if (!parsed) throw new AuthorizationFailed('missing or malformed Authorization header (BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>)');
  const dateText = first(r.headers['x-backendai-date']) ?? first(r.headers.date);
  const date = parseRequestDate(dateText);
  if (!dateText || !date) throw new AuthorizationFailed('missing or unreadable Date header');
  if (Math.abs(Date.now() - date.getTime()) > MAX_CLOCK_SKEW_MS) throw new AuthorizationFailed('the request date is more than 15 minutes from the server clock');
  const version = first(r.headers['x-backendai-version']);
  if (!version) throw new AuthorizationFailed('missing X-BackendAI-Version header');
  const kp = await keypairs.get(parsed.accessKey);
  if (!kp || !kp.isActive) throw new AuthorizationFailed('unknown or inactive access key');
  const ok = verifySignature({
    method: r.method, pathWithQuery: r.url, date: dateText, host: first(r.headers.host) ?? '',
    contentType: first(r.headers['content-type']), version, secretKey: kp.secretKey, signature: parsed.signature,
  });
  if (!ok) throw new AuthorizationFailed('signature mismatch');
  let owner = kp.accessKey;
  const b = r.body as Record<string, unknown> | undefined;
  const asOwner = r.query?.owner_access_key ?? (b && typeof b === 'object' ? b.owner_access_key : undefined);
  if (asOwner !== undefined && asOwner !== null && asOwner !== kp.accessKey) {
    if (typeof asOwner !== 'string' || !/^AK[A-Z0-9]{18}$/.test(asOwner)) throw new InvalidAPIParameters('owner_access_key: not an access key');
    if (!kp.isAdmin) throw new Forbidden('only admins may act for another owner');
    owner = asOwner;
  }
  return { keypair: kp, owner };
}

export function authenticate(keypairs: Keypairs) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const { keypair, owner } = await verifySigned(keypairs, {
      method: req.method, url: req.raw.url ?? req.url, headers: req.headers,
      query: req.query as Record<string, unknown> | undefined, body: req.body,
    });
    req.keypair = keypair;
    req.owner = owner;
  };
}

export function requireAdmin(req: FastifyRequest): void {
  if (!req.keypair?.isAdmin) throw new Forbidden('admin only');
}

// Socket tokens (POST /auth/token): a socket.io client that should not hold the secret key (a
// browser page, a process handed a watch by another) authenticates its handshake with
// `auth: {token}`. Stateless, so any manager verifies it: the access key, the owner it acts for
// and the expiry, MACed with the keypair's own secret key; deactivating the keypair (or changing
// its secret) voids its tokens at once.
const TOKEN_PREFIX = 'fst1';
const TOKEN_MAC_CONTEXT = 'flotilla socket token\n';
/** Lifetime of a socket token in seconds: what `ttl` defaults to, and the range it may ask for. */
export const SOCKET_TOKEN_TTL = { default: 300, min: 10, max: 3600 } as const;

const tokenMac = (secretKey: string, payload: string) => createHmac('sha256', secretKey).update(TOKEN_MAC_CONTEXT + payload).digest();

export function issueSocketToken(keypair: Keypair, owner: string, ttlSeconds: number): { token: string; accessKey: string; expiresAt: string } {
  const exp = Date.now() + ttlSeconds * 1000;
  const payload = Buffer.from(JSON.stringify({ ak: keypair.accessKey, ow: owner, exp })).toString('base64url');
  return { token: `${TOKEN_PREFIX}.${payload}.${tokenMac(keypair.secretKey, payload).toString('base64url')}`, accessKey: keypair.accessKey, expiresAt: new Date(exp).toISOString() };
}

export async function verifySocketToken(keypairs: Keypairs, token: string): Promise<{ keypair: Keypair; owner: string }> {
  const parts = token.length <= 1024 ? token.split('.') : [];
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) throw new AuthorizationFailed('malformed token (expected one from POST /auth/token)');
  let claims: { ak?: unknown; ow?: unknown; exp?: unknown };
  try { claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as typeof claims; } catch { throw new AuthorizationFailed('malformed token'); }
  const { ak, ow, exp } = claims ?? {};
  if (typeof ak !== 'string' || typeof ow !== 'string' || typeof exp !== 'number') throw new AuthorizationFailed('malformed token');
  const kp = await keypairs.get(ak);
  if (!kp || !kp.isActive) throw new AuthorizationFailed('unknown or inactive access key');
  const given = Buffer.from(parts[2], 'base64url');
  const expected = tokenMac(kp.secretKey, parts[1]);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AuthorizationFailed('token signature mismatch');
  if (Date.now() >= exp) throw new AuthorizationFailed('the token has expired (ask POST /auth/token for a new one)');
  if (ow !== ak && !kp.isAdmin) throw new Forbidden('only admins may act for another owner');
  return { keypair: kp, owner: ow };
}

/** `POST /auth/token` `{ttl?}` (seconds) → `{token, accessKey, expiresAt}`, acting for the request's owner. */
export function authRoutes(app: App): void {
  app.post('/auth/token', async (req) => {
    const body = req.body as unknown;
    let ttl: number = SOCKET_TOKEN_TTL.default;
    if (body !== undefined && body !== null) {
      if (typeof body !== 'object' || Array.isArray(body)) throw new InvalidAPIParameters('body: an object {ttl?}');
      const asked = (body as { ttl?: unknown }).ttl;
      if (asked !== undefined && asked !== null) {
        if (typeof asked !== 'number' || !Number.isInteger(asked) || asked < SOCKET_TOKEN_TTL.min || asked > SOCKET_TOKEN_TTL.max) {
          throw new InvalidAPIParameters(`ttl: whole seconds from ${SOCKET_TOKEN_TTL.min} to ${SOCKET_TOKEN_TTL.max}`);
        }
        ttl = asked;
      }
    }
    return issueSocketToken(req.keypair!, req.owner!, ttl);
  });
}

/**
 * socket.io middleware: `handshake.auth` carries either a socket token (`{token}`, POST
 * /auth/token) or the same signed headers as HTTP, signing `GET /socket.io`. Sets
 * `socket.data.owner` and `socket.data.admin`; `adminOnly` refuses others.
 */
export function socketAuth(keypairs: Keypairs, opts: { adminOnly?: boolean } = {}) {
  return (socket: Socket, next: (err?: ExtendedError) => void): void => {
    const auth = (socket.handshake.auth ?? {}) as Record<string, unknown>;
    const headers: Record<string, string | undefined> = { host: socket.handshake.headers.host };
    for (const [k, v] of Object.entries(auth)) if (typeof v === 'string') headers[k.toLowerCase()] = v;
    const verified = typeof auth.token === 'string'
      ? verifySocketToken(keypairs, auth.token)
      : verifySigned(keypairs, { method: 'GET', url: '/socket.io', headers });
    verified
      .then(({ keypair, owner }) => {
        if (opts.adminOnly && !keypair.isAdmin) throw new Forbidden('admin only');
        socket.data.owner = owner;
        socket.data.admin = keypair.isAdmin;
        next();
      })
      .catch((e: Error) => next(new Error(e instanceof FlotillaError ? e.message : 'authentication failed')));
  };
}
