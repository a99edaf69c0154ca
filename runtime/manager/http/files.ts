// File routes of API.md "Sessions": upload (multipart, streamed, size-limited), download (a tar
// stream) and files (a directory listing as Backend.AI returns it). Multipart parsing is
// registered here only, in this plugin's own scope.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { LiveClusterConfig } from '../../../config/live.ts';
import { FlotillaError, InvalidAPIParameters, PayloadTooLarge } from '../../../schema/errors.ts';
import type { Database } from '../../stores/types.ts';
import type { AgentRegistry } from '../agents.ts';
import { FileService, type IncomingFile } from '../files.ts';
import type { SessionService } from '../sessions.ts';
import { getBody, type App } from './app.ts';

/** Multipart framing (boundaries, part headers) allowed on top of max_upload_bytes before a declared Content-Length is refused unread. */
const MULTIPART_SLACK_BYTES = 1024 * 1024;
/** After a refusal the rest of the request is read and dropped, so the client sees the answer; past this much, the connection is closed instead. */
const DRAIN_CAP_BYTES = 64 * 1024 * 1024;

const Ref = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 64 }) });
const Owner = { owner_access_key: Type.Optional(Type.String({ maxLength: 20 })) };
const DownloadBody = Type.Object({
  files: Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 1000 }),
  ...Owner,
});

export interface FileRouteDeps { db: Database; agents: AgentRegistry; sessions: SessionService; config: LiveClusterConfig }

/** Add `POST /session/{name}/upload`, `POST|GET /session/{name}/download` and `GET /session/{name}/files`. */
export function fileRoutes(app: App, deps: FileRouteDeps): void {
  const files = new FileService({ db: deps.db, agents: deps.agents });

  app.register(async (plugin) => {
    const scope = plugin.withTypeProvider<TypeBoxTypeProvider>();
    await scope.register(multipart, { preservePath: true });

    scope.post('/session/:ref/upload', { schema: { params: Ref, querystring: Type.Object(Owner) } }, async (req, reply) => {
      const max = deps.config.get('session.max_upload_bytes');
      const declared = Number(req.headers['content-length']);
      if (Number.isFinite(declared) && declared > max + MULTIPART_SLACK_BYTES) {
        discardRest(req, reply);
        throw new PayloadTooLarge(`the upload (${declared} bytes) exceeds ${max} bytes (session.max_upload_bytes)`);
      }
      if (!req.isMultipart()) throw new InvalidAPIParameters('the files must come as multipart/form-data, one part per file, its filename the path below /home/work');
      const row = await deps.sessions.find(req.owner!, req.params.ref);
      try {
        await files.upload(row, incomingFiles(req, max), max);
      } catch (e) {
        discardRest(req, reply);
        throw e;
      }
      return reply.status(204).send();
    });

    scope.post('/session/:ref/download', { schema: { params: Ref, body: DownloadBody } }, async (req, reply) => {
      const row = await deps.sessions.find(req.owner!, req.params.ref);
      const { stream, size } = await files.download(row, req.body.files);
      return reply
        .header('content-type', 'application/x-tar')
        .header('content-length', String(size))
        .header('content-disposition', 'attachment; filename="files.tar"')
        .send(stream);
    });

    // Backend.AI's client (22.03) downloads with GET and a JSON body, and reads a
    // multipart/mixed answer whose parts are tar archives: the same tar, as one part.
    scope.get('/session/:ref/download', { schema: { params: Ref, querystring: Type.Object(Owner) } }, async (req, reply) => {
      const body = await getBody(req) as { files?: unknown } | undefined;
      const list = body && typeof body === 'object' ? body.files : undefined;
      if (!Array.isArray(list) || !list.length || list.length > 1000 || !list.every((p) => typeof p === 'string')) {
        throw new InvalidAPIParameters('files: a list of 1 to 1000 paths');
      }
      const row = await deps.sessions.find(req.owner!, req.params.ref);
      const { stream, size } = await files.download(row, list as string[]);
      const boundary = `flotilla-${randomBytes(12).toString('hex')}`;
      const head = Buffer.from(`--${boundary}\r\nContent-Type: application/x-tar\r\nContent-Disposition: attachment; filename="files.tar"\r\nContent-Length: ${size}\r\n\r\n`);
      const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
      const framed = Readable.from((async function* () {
        try {
          yield head;
          yield* stream;
          yield tail;
        } finally {
          stream.destroy();
        }
      })());
      return reply
        .header('content-type', `multipart/mixed; boundary=${boundary}`)
        .header('content-length', String(head.length + size + tail.length))
        .send(framed);
    });

    scope.get('/session/:ref/files', {
      schema: { params: Ref, querystring: Type.Object({ path: Type.Optional(Type.String({ maxLength: 4096 })), ...Owner }) },
    }, async (req) => {
      // Backend.AI's client sends `{path}` as a JSON body on this GET; a query parameter is the same.
      const body = await getBody(req) as { path?: unknown } | undefined;
      const path = req.query.path ?? (body && typeof body === 'object' && body.path !== null ? body.path : undefined) ?? '.';
      if (typeof path !== 'string') throw new InvalidAPIParameters('path: a string');
      const row = await deps.sessions.find(req.owner!, req.params.ref);
      const listing = await files.list(row, path);
      return { files: JSON.stringify(listing.files), abspath: listing.abspath };
    });
  });
}

/** The request's file parts as they arrive, multipart errors turned into the API's problems. */
async function* incomingFiles(req: FastifyRequest, max: number): AsyncGenerator<IncomingFile> {
  const parts = req.files({ limits: { fileSize: max + 1, files: 10_000, fields: 100, fieldSize: 64 * 1024, parts: 10_100 } });
  for (;;) {
    let next: IteratorResult<Awaited<ReturnType<typeof parts.next>>['value']>;
    try { next = await parts.next(); } catch (e) { throw multipartProblem(e); }
    if (next.done) return;
    const part = next.value;
    yield { path: part.filename, data: guarded(part.file) };
  }
}

async function* guarded(file: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of file) yield chunk;
  } catch (e) { throw multipartProblem(e); }
}

function multipartProblem(e: unknown): Error {
  if (e instanceof FlotillaError) return e;
  const err = e as Error & { statusCode?: number };
  if (err.statusCode === 413) return new PayloadTooLarge(err.message);
  return new InvalidAPIParameters(`unreadable multipart body: ${err.message}`);
}

/**
 * A refused upload: read and drop the rest of the request so that the client, still sending,
 * gets the answer (most clients read it only once they have sent everything). A body that
 * goes on past DRAIN_CAP_BYTES has its connection closed instead.
 */
function discardRest(req: FastifyRequest, reply: FastifyReply): void {
  const raw = req.raw;
  if (raw.readableEnded || raw.destroyed) return;
  raw.unpipe();
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > DRAIN_CAP_BYTES) {
    void reply.header('connection', 'close');
    return;
  }
  let seen = 0;
  raw.on('data', (b: Buffer) => {
    seen += b.length;
    if (seen > DRAIN_CAP_BYTES) raw.destroy();
  });
  raw.resume();
}
