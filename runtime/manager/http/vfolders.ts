// Folder routes of API.md "Folders" (issue 9), with Backend.AI's bodies, and the transfer
// routes their request-upload / request-download hand out: tus 1.0 core (OPTIONS, HEAD, PATCH)
// at /folders-io/upload and a streamed GET (one byte range allowed) at /folders-io/download.
// The transfer routes are unsigned: the token in `?token=` authorises them, as Backend.AI's
// storage proxy does, so tus clients work unchanged.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { OutgoingHttpHeaders } from 'node:http';
import { Type } from 'typebox';
import { FlotillaError, InvalidAPIParameters } from '../../../schema/errors.ts';
import { sendFileRange } from '../../../schema/positional-io.ts';
import type { VfolderService } from '../vfolders.ts';
import { getBody, type App } from './app.ts';

const TUS_VERSION = '1.0.0';
const TUS_CONTENT_TYPE = 'application/offset+octet-stream';
export const UPLOAD_ROUTE = '/folders-io/upload';
export const DOWNLOAD_ROUTE = '/folders-io/download';

/** tus answers 412 to a client of another protocol version, 415 to a PATCH of another content type. */
class TusPreconditionFailed extends FlotillaError {
  override readonly status: number = 412;
  override readonly code: string = 'tus-version-unsupported';
  override readonly title: string = 'Unsupported tus protocol version (Tus-Resumable: 1.0.0 only).';
}
class UnsupportedMediaType extends FlotillaError {
  override readonly status: number = 415;
  override readonly code: string = 'unsupported-media-type';
  override readonly title: string = `A tus PATCH body must be ${TUS_CONTENT_TYPE}.`;
}

const Ref = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) });
const Owner = { owner_access_key: Type.Optional(Type.String({ maxLength: 20 })) };
const Token = Type.Object({ token: Type.Optional(Type.String({ maxLength: 200 })) });
/** Bodies are checked field by field by the service (Backend.AI clients send extra keys and nulls). */
const AnyBody = Type.Object({}, { additionalProperties: true });
type Body = Record<string, unknown>;

/** Add the `/folders...` routes. */
export function vfolderRoutes(app: App, deps: { vfolders: VfolderService }): void {
  const vf = deps.vfolders;
  const origin = (req: FastifyRequest) => `${req.protocol}://${req.headers.host ?? req.hostname}`;

  app.register(async (plugin) => {
    const scope = plugin.withTypeProvider<TypeBoxTypeProvider>();
    // A tus PATCH body is read by the handler as it arrives, straight from the socket.
    scope.addContentTypeParser(TUS_CONTENT_TYPE, (_req, _payload, done) => done(null));

    scope.post('/folders', { schema: { body: AnyBody } }, async (req, reply) => {
      const b = req.body as Body;
      return reply.status(201).send(await vf.create(req.owner!, b));
    });

    scope.get('/folders', { schema: { querystring: Type.Object({ status: Type.Optional(Type.Union([Type.Literal('ready'), Type.Literal('delete-pending')])), ...Owner }) } },
      async (req) => vf.list(req.owner!, { status: req.query.status }));

    scope.post('/folders/restore', { schema: { body: AnyBody } }, async (req) => vf.restore(req.owner!, refOf(req.body as Body)));
    scope.post('/folders/purge', { schema: { body: AnyBody } }, async (req, reply) => {
      await vf.purge(req.owner!, refOf(req.body as Body));
      return reply.status(204).send();
    });

    scope.get('/folders/:name', { schema: { params: Ref, querystring: Type.Object(Owner) } }, async (req) => vf.info(req.owner!, req.params.name));

    scope.delete('/folders/:name', { schema: { params: Ref, querystring: Type.Object(Owner) } }, async (req, reply) => {
      await vf.trash(req.owner!, req.params.name);
      return reply.status(204).send();
    });

    scope.post('/folders/:name/rename', { schema: { params: Ref, body: AnyBody } }, async (req) => vf.rename(req.owner!, req.params.name, (req.body as Body).new_name));

    scope.post('/folders/:name/mkdir', { schema: { params: Ref, body: AnyBody } }, async (req, reply) => {
      const b = req.body as Body;
      const results = await vf.mkdir(req.owner!, req.params.name, b.path, { parents: b.parents === true, existOk: b.exist_ok === true });
      return reply.status(201).send({ results });
    });

    scope.get('/folders/:name/files', {
      schema: { params: Ref, querystring: Type.Object({ path: Type.Optional(Type.String({ maxLength: 4096 })), ...Owner }) },
    }, async (req) => {
      // Backend.AI's client sends `{path}` as a JSON body on this GET; a query parameter is the same.
      const body = await getBody(req) as Body | undefined;
      const path = req.query.path ?? (body && typeof body === 'object' && body.path !== null ? body.path : undefined) ?? '.';
      const listing = await vf.listFiles(req.owner!, req.params.name, path);
      return { files: JSON.stringify(listing.files), folder_path: listing.folder_path };
    });

    scope.post('/folders/:name/rename-file', { schema: { params: Ref, body: AnyBody } }, async (req, reply) => {
      const b = req.body as Body;
      await vf.renameFile(req.owner!, req.params.name, b.target_path, b.new_name);
      return reply.status(204).send();
    });

    scope.post('/folders/:name/delete-files', { schema: { params: Ref, body: AnyBody } }, async (req, reply) => {
      const b = req.body as Body;
      await vf.deleteFiles(req.owner!, req.params.name, b.files, b.recursive === true);
      return reply.status(204).send();
    });

    scope.post('/folders/:name/request-upload', { schema: { params: Ref, body: AnyBody } }, async (req) => {
      const b = req.body as Body;
      const { token } = await vf.requestUpload(req.owner!, req.params.name, b.path, b.size);
      return { url: origin(req) + UPLOAD_ROUTE, token };
    });

    scope.post('/folders/:name/request-download', { schema: { params: Ref, body: AnyBody } }, async (req) => {
      const b = req.body as Body;
      if (b.archive === true) throw new InvalidAPIParameters('archive downloads are not supported: request each file');
      const { token } = await vf.requestDownload(req.owner!, req.params.name, b.path ?? b.file);
      return { url: origin(req) + DOWNLOAD_ROUTE, token };
    });

    // Backend.AI: invite {perm, user_ids}; share {permission, emails}; unshare {emails}. Here
    // an invitation is a share at once (no pending invitations to accept).
    scope.post('/folders/:name/invite', { schema: { params: Ref, body: AnyBody } }, async (req, reply) => {
      const b = req.body as Body;
      const invited = await vf.share(req.owner!, req.params.name, b.user_ids ?? b.emails, b.perm ?? b.permission ?? 'rw');
      return reply.status(201).send({ invited_ids: invited });
    });
    scope.post('/folders/:name/share', { schema: { params: Ref, body: AnyBody } }, async (req, reply) => {
      const b = req.body as Body;
      const shared = await vf.share(req.owner!, req.params.name, b.emails ?? b.user_ids, b.permission ?? b.perm ?? 'rw');
      return reply.status(201).send({ shared_emails: shared });
    });
    scope.post('/folders/:name/unshare', { schema: { params: Ref, body: AnyBody } }, async (req) => {
      const b = req.body as Body;
      return { unshared_emails: await vf.unshare(req.owner!, req.params.name, b.emails ?? b.user_ids) };
    });

    // ---- transfers (token-authorised)

    const tus = (reply: FastifyReply) => reply.header('Tus-Resumable', TUS_VERSION).header('Cache-Control', 'no-store');
    const unsigned = { unsigned: true };

    scope.options(UPLOAD_ROUTE, { config: unsigned }, async (_req, reply) => {
      return tus(reply).header('Tus-Version', TUS_VERSION).header('Tus-Extension', '').status(204).send();
    });

    scope.head(UPLOAD_ROUTE, { config: unsigned, schema: { querystring: Token } }, async (req, reply) => {
      tus(reply);
      const { offset, size } = await vf.uploadOffset(req.query.token);
      return reply.header('Upload-Offset', String(offset)).header('Upload-Length', String(size)).status(200).send();
    });

    scope.patch(UPLOAD_ROUTE, { config: unsigned, schema: { querystring: Token } }, async (req, reply) => {
      tus(reply);
      try {
        if (req.headers['tus-resumable'] !== TUS_VERSION) {
          reply.header('Tus-Version', TUS_VERSION);
          throw new TusPreconditionFailed(`Tus-Resumable: ${JSON.stringify(req.headers['tus-resumable'] ?? null)}`);
        }
        if ((req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase() !== TUS_CONTENT_TYPE) throw new UnsupportedMediaType();
        const offset = intHeader(req.headers['upload-offset'], 'Upload-Offset');
        if (offset === undefined) throw new InvalidAPIParameters('Upload-Offset: required');
        const length = intHeader(req.headers['content-length'], 'Content-Length');
        const r = await vf.uploadChunk(req.query.token, offset, req.raw, length);
        return reply.header('Upload-Offset', String(r.offset)).status(204).send();
      } catch (e) {
        // A refusal before the body was read: the connection closes after the answer rather
        // than reading what the client is still sending.
        if (!req.raw.readableEnded) reply.header('Connection', 'close');
        if (req.raw.destroyed && !(e instanceof FlotillaError)) throw new InvalidAPIParameters('the connection was cut during the upload; HEAD for the offset and resume');
        throw e;
      }
    });

    scope.get(DOWNLOAD_ROUTE, { config: unsigned, schema: { querystring: Token } }, async (req, reply) => {
      const f = await vf.openDownload(req.query.token);
      let start = 0;
      let end = f.size - 1;
      const range = req.headers.range;
      if (range) {
        const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
        const s = m?.[1] ? Number(m[1]) : undefined;
        const e = m?.[2] ? Number(m[2]) : undefined;
        const ok = m && (s !== undefined || e !== undefined) && (s === undefined || s < f.size) && (s === undefined || e === undefined || e >= s);
        if (!ok) {
          await f.handle.close();
          return reply.status(416).header('Content-Range', `bytes */${f.size}`).type('application/json')
            .send({ type: 'https://api.backend.ai/probs/range-not-satisfiable', title: 'Range not satisfiable.', msg: `file size ${f.size}` });
        }
        if (s === undefined) start = Math.max(0, f.size - e!);
        else { start = s; if (e !== undefined) end = Math.min(e, f.size - 1); }
        reply.status(206).header('Content-Range', `bytes ${start}-${end}/${f.size}`);
      }
      const length = f.size === 0 ? 0 : end - start + 1;
      reply
        .header('Content-Type', 'application/octet-stream')
        .header('Content-Length', String(length))
        .header('Accept-Ranges', 'bytes')
        .header('Last-Modified', new Date(f.mtimeMs).toUTCString())
        .header('Content-Disposition', `attachment; ${filenameParam(f.filename)}`);
      if (length === 0) { await f.handle.close(); return reply.send(''); }
      // The bytes go from the descriptor opened above (O_NOFOLLOW) straight to the socket, 1 MiB
      // per read into three reused buffers (no stream in between, nothing allocated per chunk).
      reply.hijack();
      const res = reply.raw;
      res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
      try {
        // A HEAD (fastify answers it with this handler) gets the headers alone.
        await sendFileRange(f.handle, start, req.method === 'HEAD' ? 0 : length, res);
        res.end();
      } catch (e) {
        req.log.info({ err: (e as Error).message }, 'vfolder download cut short');
        res.destroy();
      } finally {
        await f.handle.close().catch(() => undefined);
      }
    });
  });
}

function refOf(b: Body): string {
  const ref = b.id ?? b.name;
  if (typeof ref !== 'string' || !ref) throw new InvalidAPIParameters('id (or name) of the folder: required');
  return ref;
}

function intHeader(raw: string | string[] | undefined, name: string): number | undefined {
  if (raw === undefined) return undefined;
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (!/^\d{1,16}$/.test(v)) throw new InvalidAPIParameters(`${name}: a non-negative integer`);
  return Number(v);
}

/** A Content-Disposition `filename` parameter (RFC 5987 form for the unusual names). */
function filenameParam(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name) && !/["\\]/.test(name)) return `filename="${name}"`;
  return `filename*=UTF-8''${encodeURIComponent(name)}`;
}

