// GET /events/session (API.md "Events"): Backend.AI's Server-Sent Events stream of session and
// kernel lifecycle events, `event: <name>` with `data: {sessionId, sessionName, kernelId,
// ownerAccessKey, reason, status, seq, at}` and `id: <seq>`. A client that reconnects with
// `Last-Event-ID` (or `sinceSeq`) gets the stored events after it first, then live ones, as /watch.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Forbidden, InvalidAPIParameters } from '../../../schema/errors.ts';
import type { Subscriber, WatchGateway } from '../watch.ts';
import type { App } from './app.ts';

/** A comment line this often keeps proxies from closing an idle stream. */
const KEEPALIVE_MS = 15_000;

export function eventRoutes(app: App, deps: { watch: WatchGateway }): void {
  app.withTypeProvider<TypeBoxTypeProvider>().get('/events/session', {
    schema: {
      querystring: Type.Object({
        sessionName: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
        name: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
        ownerAccessKey: Type.Optional(Type.String({ pattern: '^AK[A-Z0-9]{18}$' })),
        owner_access_key: Type.Optional(Type.String({ maxLength: 20 })),
        sinceSeq: Type.Optional(Type.Integer({ minimum: 0 })),
        group: Type.Optional(Type.String({ maxLength: 64 })), scope: Type.Optional(Type.String({ maxLength: 32 })),
      }, { additionalProperties: false }),
    },
  }, async (req, reply) => {
    const q = req.query;
    let owner = req.owner!;
    if (q.ownerAccessKey && q.ownerAccessKey !== req.keypair!.accessKey) {
      if (!req.keypair!.isAdmin) throw new Forbidden('only admins may watch another owner\'s sessions');
      owner = q.ownerAccessKey;
    }
    const lastId = req.headers['last-event-id'];
    let since = q.sinceSeq;
    if (typeof lastId === 'string' && lastId !== '') {
      if (!/^\d{1,18}$/.test(lastId)) throw new InvalidAPIParameters('Last-Event-ID: the seq of the last event received');
      since = Number(lastId);
    }
    const name = q.sessionName ?? q.name;
    // An admin watching as itself sees everyone's sessions; naming an owner narrows to that owner.
    const admin = req.keypair!.isAdmin && owner === req.keypair!.accessKey;
    const raw = reply.raw;
    reply.hijack();
    raw.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    raw.write(': flotilla session events\n\n');
    const sub: Subscriber = {
      owner, admin, sessionName: name === '*' ? undefined : name,
      send: (e) => { raw.write(`id: ${e.seq}\nevent: ${e.name}\ndata: ${JSON.stringify(e)}\n\n`); },
    };
    const keepalive = setInterval(() => raw.write(': keepalive\n\n'), KEEPALIVE_MS);
    keepalive.unref();
    const stop = () => { clearInterval(keepalive); deps.watch.unsubscribe(sub); };
    raw.on('close', stop);
    try {
      await deps.watch.subscribe(sub, since);
    } catch (err) {
      req.log.warn({ err: (err as Error).message }, 'SSE replay failed');
      stop();
      raw.end();
    }
  });
}
