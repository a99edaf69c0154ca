// Backend.AI request signing on every route but the unsigned ones (API.md): the Date within 15
// minutes of our clock, the keypair active, the HMAC over exactly what was received.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthorizationFailed, Forbidden, InvalidAPIParameters } from '../../../schema/errors.ts';
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

const header = (req: FastifyRequest, name: string): string | undefined => {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

export function authenticate(keypairs: Keypairs) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const parsed = parseAuthorization(header(req, 'authorization'));
    if (!parsed) throw new AuthorizationFailed('missing or malformed Authorization header (BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>)');
    const dateText = header(req, 'x-backendai-date') ?? header(req, 'date');
    const date = parseRequestDate(dateText);
    if (!dateText || !date) throw new AuthorizationFailed('missing or unreadable Date header');
    if (Math.abs(Date.now() - date.getTime()) > MAX_CLOCK_SKEW_MS) throw new AuthorizationFailed('the request date is more than 15 minutes from the server clock');
    const version = header(req, 'x-backendai-version');
    if (!version) throw new AuthorizationFailed('missing X-BackendAI-Version header');
    const kp = await keypairs.get(parsed.accessKey);
    if (!kp || !kp.isActive) throw new AuthorizationFailed('unknown or inactive access key');
    const ok = verifySignature({
      method: req.method, pathWithQuery: req.raw.url ?? req.url, date: dateText, host: header(req, 'host') ?? '',
      contentType: header(req, 'content-type'), version, secretKey: kp.secretKey, signature: parsed.signature,
    });
    if (!ok) throw new AuthorizationFailed('signature mismatch');
    req.keypair = kp;
    req.owner = kp.accessKey;
    const q = req.query as Record<string, unknown> | undefined;
    const b = req.body as Record<string, unknown> | undefined;
    const asOwner = q?.owner_access_key ?? (b && typeof b === 'object' ? b.owner_access_key : undefined);
    if (asOwner !== undefined && asOwner !== null && asOwner !== kp.accessKey) {
      if (typeof asOwner !== 'string' || !/^AK[A-Z0-9]{18}$/.test(asOwner)) throw new InvalidAPIParameters('owner_access_key: not an access key');
      if (!kp.isAdmin) throw new Forbidden('only admins may act for another owner');
      req.owner = asOwner;
    }
  };
}

export function requireAdmin(req: FastifyRequest): void {
  if (!req.keypair?.isAdmin) throw new Forbidden('admin only');
}
