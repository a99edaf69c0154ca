// Backend.AI request signing on every route but the unsigned ones (API.md): the Date within 15
// minutes of our clock, the keypair active, the HMAC over exactly what was received.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ExtendedError, Socket } from 'socket.io';
import { AuthorizationFailed, FlotillaError, Forbidden, InvalidAPIParameters } from '../../../schema/errors.ts';
import { parseAuthorization, parseRequestDate, verifySignature } from '../../../schema/signing.ts';
import type { Keypair, Keypairs } from '../keypairs.ts';

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

/**
 * socket.io middleware: the same signed headers as HTTP, carried in `handshake.auth`, signing
 * `GET /socket.io`. Sets `socket.data.owner` and `socket.data.admin`; `adminOnly` refuses others.
 */
export function socketAuth(keypairs: Keypairs, opts: { adminOnly?: boolean } = {}) {
  return (socket: Socket, next: (err?: ExtendedError) => void): void => {
    const auth = (socket.handshake.auth ?? {}) as Record<string, unknown>;
    const headers: Record<string, string | undefined> = { host: socket.handshake.headers.host };
    for (const [k, v] of Object.entries(auth)) if (typeof v === 'string') headers[k.toLowerCase()] = v;
    verifySigned(keypairs, { method: 'GET', url: '/socket.io', headers })
      .then(({ keypair, owner }) => {
        if (opts.adminOnly && !keypair.isAdmin) throw new Forbidden('admin only');
        socket.data.owner = owner;
        socket.data.admin = keypair.isAdmin;
        next();
      })
      .catch((e: Error) => next(new Error(e instanceof FlotillaError ? e.message : 'authentication failed')));
  };
}
