// Session routes of API.md (the execution routes come with issue 4).
import { Type } from 'typebox';
import { InvalidAPIParameters } from '../../../schema/errors.ts';
import { resultJson, type ExecutionService } from '../execution.ts';
import type { SessionService } from '../sessions.ts';
import type { App } from './app.ts';

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Optional(Type.Union([t, Type.Null()]));
const Str = (max = 256) => Nullable(Type.String({ maxLength: max }));

// Backend.AI clients send camelCase or snake_case keys, and null for what they leave unset.
const CreateBody = Type.Object({
  name: Str(64), sessionName: Str(64), session_name: Str(64), clientSessionToken: Str(64),
  image: Str(), lang: Str(),
  type: Nullable(Type.Union([Type.Literal('interactive'), Type.Literal('batch')])),
  sessionType: Nullable(Type.Union([Type.Literal('interactive'), Type.Literal('batch')])),
  session_type: Nullable(Type.Union([Type.Literal('interactive'), Type.Literal('batch')])),
  clusterSize: Nullable(Type.Integer({ minimum: 1, maximum: 64 })), cluster_size: Nullable(Type.Integer({ minimum: 1, maximum: 64 })),
  clusterMode: Nullable(Type.Union([Type.Literal('single-node'), Type.Literal('multi-node')])),
  cluster_mode: Nullable(Type.Union([Type.Literal('single-node'), Type.Literal('multi-node')])),
  config: Nullable(Type.Object({
    resources: Nullable(Type.Record(Type.String({ maxLength: 64 }), Type.Union([Type.String({ maxLength: 64 }), Type.Number()]))),
    mounts: Nullable(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 64 })),
    mount_map: Nullable(Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: 4096 }))),
    // additionalProperties: a key pattern alone only constrains the keys that match it.
    environ: Nullable(Type.Record(Type.String({ maxLength: 256, pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String({ maxLength: 65536 }), { additionalProperties: false })),
    scalingGroup: Str(64), scaling_group: Str(64), resource_opts: Nullable(Type.Record(Type.String(), Type.Unknown())),
  })),
  enqueueOnly: Nullable(Type.Boolean()), enqueue_only: Nullable(Type.Boolean()),
  maxWaitSeconds: Nullable(Type.Integer({ minimum: 0, maximum: 3600 })), max_wait_seconds: Nullable(Type.Integer({ minimum: 0, maximum: 3600 })),
  reuseIfExists: Nullable(Type.Boolean()), reuse_if_exists: Nullable(Type.Boolean()),
  startupCommand: Str(65536), startup_command: Str(65536),
  owner_access_key: Str(20), tag: Str(256), domain: Str(64), group: Str(64), group_name: Str(64), domain_name: Str(64),
});

const Ref = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 64 }) });

const ExecuteBody = Type.Object({
  mode: Type.Union([Type.Literal('query'), Type.Literal('batch'), Type.Literal('continue'), Type.Literal('input')]),
  code: Type.Optional(Type.Union([Type.String({ maxLength: 8 * 1024 * 1024 }), Type.Null()])),
  runId: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' }), Type.Null()])),
  options: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()])),
});

export function sessionRoutes(app: App, sessions: SessionService, execution: ExecutionService): void {
  app.post('/session', { schema: { body: CreateBody } }, async (req, reply) => {
    const b = req.body;
    const pick = <T>(...vs: Array<T | null | undefined>) => vs.find((v) => v !== undefined && v !== null) ?? undefined;
    const name = pick(b.name, b.sessionName, b.session_name, b.clientSessionToken);
    const image = pick(b.image, b.lang);
    if (!name) throw new InvalidAPIParameters('name is required');
    if (!image) throw new InvalidAPIParameters('image is required');
    const cfg = b.config ?? {};
    const result = await sessions.create(req.owner!, {
      name, image,
      type: pick(b.type, b.sessionType, b.session_type) ?? 'interactive',
      clusterSize: pick(b.clusterSize, b.cluster_size) ?? 1,
      clusterMode: pick(b.clusterMode, b.cluster_mode) ?? 'single-node',
      resources: cfg.resources ?? {},
      environ: cfg.environ ?? {},
      mounts: [...new Set([...(cfg.mounts ?? []), ...Object.keys(cfg.mount_map ?? {})])],
      mountMap: cfg.mount_map ?? {},
      resourceGroup: pick(cfg.scalingGroup, cfg.scaling_group) ?? 'default',
      enqueueOnly: pick(b.enqueueOnly, b.enqueue_only) ?? false,
      maxWaitSeconds: pick(b.maxWaitSeconds, b.max_wait_seconds) ?? 0,
      reuseIfExists: pick(b.reuseIfExists, b.reuse_if_exists) ?? false,
      startupCommand: pick(b.startupCommand, b.startup_command),
      tag: pick(b.tag),
    });
    return reply.status(result.created ? 201 : 200).send({ ...result, servicePorts: [] });
  });

  app.get('/session', {
    schema: {
      querystring: Type.Object({
        status: Type.Optional(Type.String({ maxLength: 256, pattern: '^[A-Z_]+(,[A-Z_]+)*$' })),
        // Digits only: converting "2.25" to an integer would truncate it instead of refusing it.
        limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
        offset: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })),
        owner_access_key: Type.Optional(Type.String({ maxLength: 20 })),
      }),
    },
  }, async (req) => {
    const limit = Number(req.query.limit ?? 100);
    if (limit < 1 || limit > 1000) throw new InvalidAPIParameters('querystring/limit must be 1 to 1000');
    return sessions.list(req.owner!, { status: req.query.status?.split(','), limit, offset: Number(req.query.offset ?? 0) });
  });

  app.get('/session/:ref', { schema: { params: Ref } }, async (req) => sessions.info(await sessions.find(req.owner!, req.params.ref)));

  app.delete('/session/:ref', {
    schema: { params: Ref, querystring: Type.Object({ forced: Type.Optional(Type.Boolean()), owner_access_key: Type.Optional(Type.String({ maxLength: 20 })) }) },
  }, async (req) => {
    const row = await sessions.find(req.owner!, req.params.ref);
    const status = await sessions.destroy(row, req.query.forced ?? false);
    return { stats: {}, status };
  });

  app.patch('/session/:ref', { schema: { params: Ref } }, async (req, reply) => {
    await sessions.restart(await sessions.find(req.owner!, req.params.ref));
    return reply.status(204).send();
  });

  app.post('/session/:ref', { schema: { params: Ref, body: ExecuteBody }, bodyLimit: 9 * 1024 * 1024 }, async (req, reply) => {
    const row = await sessions.find(req.owner!, req.params.ref);
    const b = req.body;
    const r = await execution.execute(row, { mode: b.mode, code: b.code ?? '', runId: b.runId ?? null, options: b.options ?? {} });
    // A client that left before this answer reached it (a poll that timed out on its side) gets
    // the answer's output with its next continue: the agent has let go of it already.
    const res = reply.raw;
    if (res.destroyed || req.raw.socket?.destroyed) execution.undelivered(r);
    else res.once('close', () => { if (!res.writableFinished) execution.undelivered(r); });
    return reply.type('application/json; charset=utf-8').send(resultJson(r, true));
  });

  app.post('/session/:ref/interrupt', { schema: { params: Ref } }, async (req, reply) => {
    await execution.interrupt(await sessions.find(req.owner!, req.params.ref));
    return reply.status(204).send();
  });

  app.get('/session/:ref/logs', { schema: { params: Ref } }, async (req) => ({
    result: { logs: await sessions.logs(await sessions.find(req.owner!, req.params.ref)) },
  }));
}
