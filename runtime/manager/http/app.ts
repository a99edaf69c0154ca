// The manager's HTTP server (fastify): JSON problem errors, the body quirks of Backend.AI's
// clients (JSON bodies on GET, text/plain on empty bodies), request signing, and the routes.
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { FlotillaError, InvalidAPIParameters, NotFound, PayloadTooLarge, InternalServerError } from '../../../schema/errors.ts';
import type { Logger } from '../../log.ts';
import type { Keypairs } from '../keypairs.ts';
import type { RateLimiter } from '../rate-limit.ts';
import { authenticate } from './auth.ts';

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

/** Routes answered without a signature. */
const UNSIGNED = new Set(['/', '/health']);

/**
 * A JSON request body as the API reads it (also the bodies of GETs, which fastify leaves
 * unread): empty means none; no field takes a NUL character or a lone UTF-16 surrogate
 * (`\ud800` escaped alone): PostgreSQL stores neither, and one such string in a batch of
 * creates would fail the whole batch.
 */
export function parseJsonBody(text: string): unknown {
  if (!text.trim()) return undefined;
  let body: unknown;
  try { body = JSON.parse(text); } catch { throw new InvalidAPIParameters('the body is not valid JSON'); }
  // The text is only a cheap hint (an escaped backslash before "u0000" is no NUL: code may say
  // "\\u0000"); the parsed strings decide.
  if (/\\u0000/i.test(text) && !every(body, (s) => !s.includes('\0'))) throw new InvalidAPIParameters('NUL characters (\\u0000) are not allowed');
  if (/\\u[dD][89a-fA-F]/.test(text) && !every(body, (s) => !LONE_SURROGATE.test(s))) throw new InvalidAPIParameters('lone UTF-16 surrogates (\\ud800-\\udfff) are not allowed');
  return body;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Every string in a parsed JSON value (keys too) passes `ok`. */
function every(v: unknown, ok: (s: string) => boolean): boolean {
  if (typeof v === 'string') return ok(v);
  if (Array.isArray(v)) return v.every((x) => every(x, ok));
  if (v && typeof v === 'object') return Object.entries(v).every(([k, x]) => ok(k) && every(x, ok));
  return true;
}

interface SchemaError { keyword?: string; instancePath?: string; message?: string; params?: Record<string, unknown> }

/**
 * A schema validation failure in a sentence: the first field that failed, and what it takes.
 * A union's branches are summed up ("must be one of ...") instead of listed one failure each,
 * and the null branch of an optional field is left out.
 */
export function describeValidation(context: string, errors: readonly SchemaError[]): string {
  const path = errors[0]?.instancePath ?? '';
  const at = errors.filter((e) => (e.instancePath ?? '') === path && e.keyword !== 'anyOf');
  const relevant = at.length > 1 ? at.filter((e) => !(e.keyword === 'type' && e.params?.type === 'null')) : at;
  const where = `${context}${path}`;
  if (relevant.length && relevant.every((e) => e.keyword === 'const')) {
    return `${where} must be one of ${relevant.map((e) => JSON.stringify(e.params?.allowedValue)).join(', ')}`;
  }
  const messages = [...new Set(relevant.map((e) => e.message ?? 'is invalid'))];
  return `${where} ${messages.join(' or ') || 'is invalid'}`;
}

/** Largest JSON body accepted on a GET. */
const GET_BODY_LIMIT = 256 * 1024;

/**
 * The JSON body of a GET, which fastify leaves unread (Backend.AI's client sends its arguments
 * that way): undefined when there is none or it is empty.
 */
export async function getBody(req: FastifyRequest): Promise<unknown> {
  if (req.body !== undefined) return req.body;
  const raw = req.raw;
  if (raw.headers['content-length'] === undefined && raw.headers['transfer-encoding'] === undefined) return undefined;
  if (raw.readableEnded) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of raw) {
    size += (chunk as Buffer).length;
    if (size > GET_BODY_LIMIT) throw new PayloadTooLarge(`the request body is larger than ${GET_BODY_LIMIT} bytes`);
    chunks.push(chunk as Buffer);
  }
  return parseJsonBody(Buffer.concat(chunks).toString('utf8'));
}

export function buildApp(deps: { log: Logger; keypairs: Keypairs; rateLimit?: RateLimiter; bodyLimit?: number }): App {
  const app = Fastify({
    loggerInstance: deps.log,
    // One line per request is noise at this rate; errors are logged where they are handled.
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request (its request id is in no log line we write): one less
    // allocation on every request.
    childLoggerFactory: (logger) => logger,
    bodyLimit: deps.bodyLimit ?? 1024 * 1024,
    // Requests fastify refuses before routing (a bad percent-encoding, a path parameter past its
    // length limit) answer problem JSON like every other error.
    frameworkErrors: (err, _req, reply) => {
      const p = new InvalidAPIParameters(err.message);
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      void (reply as unknown as FastifyReply).status(status).type('application/json').send(p.toProblem());
    },
    // Requests node's HTTP parser refuses (bytes that are not HTTP, oversized headers): a plain
    // problem answer on the socket, then close it.
    clientErrorHandler: (err, socket) => {
      if (!socket.writable) { socket.destroy(); return; }
      const code = (err as { code?: string }).code;
      const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      const body = JSON.stringify(new InvalidAPIParameters(`malformed HTTP request (${code ?? 'parse error'})`).toProblem());
      socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // TypeBox checks bodies exactly as sent (AJV's type coercion turned a 0 into null) and
  // converts only query strings, params and headers.
  app.setValidatorCompiler(TypeBoxValidatorCompiler);

  // Empty bodies come as application/json or text/plain from Backend.AI clients; both mean "none".
  const parseJsonOrEmpty = (_req: unknown, body: string, done: (err: Error | null, value?: unknown) => void) => {
    try { done(null, parseJsonBody(body)); } catch (e) { done(e as Error); }
  };
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser(['application/json', 'text/plain'], { parseAs: 'string' }, parseJsonOrEmpty);

  app.setErrorHandler((err: FastifyError | FlotillaError, req, reply) => {
    let problem: FlotillaError;
    if (err instanceof FlotillaError) problem = err;
    // Text PostgreSQL cannot take (a safety net behind the checks above): the request's fault.
    else if (['22021', '22P05'].includes((err as { code?: string }).code ?? '')) problem = new InvalidAPIParameters('the request contains characters that cannot be stored');
    else if ((err as FastifyError).validation) problem = new InvalidAPIParameters(describeValidation((err as FastifyError).validationContext ?? 'request', (err as FastifyError).validation!));
    else if ((err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') problem = new PayloadTooLarge(err.message);
    else if ((err as FastifyError).statusCode && (err as FastifyError).statusCode! >= 400 && (err as FastifyError).statusCode! < 500) problem = new InvalidAPIParameters(err.message);
    else {
      req.log.error({ err, url: req.url }, 'unhandled error in a request');
      problem = new InternalServerError();
    }
    void reply.status(problem.status).type('application/json').send(problem.toProblem());
  });
  app.setNotFoundHandler((req, reply) => {
    const p = new NotFound(`no route ${req.method} ${req.url.split('?')[0]}`);
    void reply.status(p.status).type('application/json').send(p.toProblem());
  });

  app.addHook('onRequest', async (req) => {
    if (/%00/i.test(req.raw.url ?? '')) throw new InvalidAPIParameters('NUL characters (%00) are not allowed in the path or query');
  });

  const auth = authenticate(deps.keypairs);
  app.addHook('preValidation', async (req, reply) => {
    const route = req.routeOptions; // a getter that builds an object: read once
    if (UNSIGNED.has(route.url ?? '') && req.method === 'GET') return;
    if (route.url === undefined) return; // not found: answered as such
    if ((route.config as { unsigned?: boolean } | undefined)?.unsigned) return;
    await auth(req, reply);
    if (deps.rateLimit) await deps.rateLimit(req.keypair!, reply);
  });
  return app;
}
