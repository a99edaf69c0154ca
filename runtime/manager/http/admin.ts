// Admin routes (flotilla's own, admin keypairs only): agents, keypairs, resource policies and
// the periodic jobs. Keypair secrets leave the manager once, in the answer that creates them.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { FlotillaError, NotFound, ServiceUnavailable } from '../../../schema/errors.ts';
import type { LiveClusterConfig } from '../../../config/live.ts';
import type { ActorGraph } from '../actor-graph.ts';
import type { AgentRegistry } from '../agents.ts';
import type { PeriodicJobs } from '../jobs.ts';
import type { Keypairs } from '../keypairs.ts';
import type { ResourcePolicies } from '../policies.ts';
import { RESOURCE_GROUP_NAME, SchedulerOptionsPatch, type ResourceGroups } from '../resource-groups.ts';
import { requireAdmin } from './auth.ts';
import type { App } from './app.ts';

const AccessKey = Type.Object({ accessKey: Type.String({ pattern: '^AK[A-Z0-9]{18}$' }) });
const PolicyName = Type.String({ pattern: '^[a-zA-Z0-9_.-]{1,64}$' });
const Count = Type.Integer({ minimum: 0, maximum: 1_000_000 });
const RateLimit = Type.Integer({ minimum: 0, maximum: 2_147_483_647, description: 'requests per 15 minutes; 0: no limit' });
const Seconds = Type.Integer({ minimum: 0, maximum: 10 * 365 * 86400 });

const KeypairCreate = Type.Object({
  email: Type.String({ minLength: 3, maxLength: 256, pattern: '^[^@\\s]+@[^@\\s]+$' }),
  is_admin: Type.Optional(Type.Boolean()),
  resource_policy: Type.Optional(PolicyName),
  rate_limit: Type.Optional(RateLimit),
}, { additionalProperties: false });
const KeypairChange = Type.Object({
  is_active: Type.Optional(Type.Boolean()),
  is_admin: Type.Optional(Type.Boolean()),
  resource_policy: Type.Optional(PolicyName),
  rate_limit: Type.Optional(RateLimit),
}, { additionalProperties: false });

const PolicyFields = {
  max_concurrent_sessions: Type.Optional(Count),
  total_resource_slots: Type.Optional(Type.Record(Type.String({ pattern: '^[a-z][a-z0-9_.]{0,63}$' }), Type.Union([Type.String({ maxLength: 64 }), Type.Number({ minimum: 0 })]))),
  max_pending_session_count: Type.Optional(Type.Union([Count, Type.Null()])),
  max_containers_per_session: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
  idle_timeout: Type.Optional(Seconds),
  max_session_lifetime: Type.Optional(Seconds),
  max_vfolder_count: Type.Optional(Count),
};
const PolicyCreate = Type.Object({ name: PolicyName, ...PolicyFields }, { additionalProperties: false });
const PolicyChange = Type.Object(PolicyFields, { additionalProperties: false });

const GroupName = Type.Object({ name: Type.String({ pattern: RESOURCE_GROUP_NAME }) });
const GroupFields = {
  description: Type.Optional(Type.String({ maxLength: 1024 })),
  is_active: Type.Optional(Type.Boolean()),
  ...SchedulerOptionsPatch.properties,
};
const GroupCreate = Type.Object({ name: Type.String({ pattern: RESOURCE_GROUP_NAME }), ...GroupFields }, { additionalProperties: false });
const GroupChange = Type.Object(GroupFields, { additionalProperties: false });
const GroupKeypairs = Type.Object({ access_keys: Type.Array(AccessKey.properties.accessKey, { minItems: 1, maxItems: 1000 }) }, { additionalProperties: false });

export interface AdminDeps { config: LiveClusterConfig; agents: AgentRegistry; keypairs: Keypairs; policies: ResourcePolicies; jobs: PeriodicJobs; graph: ActorGraph; groups: ResourceGroups }

export function adminRoutes(app: App, deps: AdminDeps): void {
  // Every route here is admin-only: checked once for the whole prefix.
  app.register(async (plugin) => {
    const admin = plugin.withTypeProvider<TypeBoxTypeProvider>();
    // Before validation: a user learns nothing about these routes' bodies, only that they are not theirs.
    admin.addHook('preValidation', async (req) => requireAdmin(req));

    admin.get('/agents', async () => deps.agents.list());
    // The cluster config as this manager holds it now (etcd's values over the defaults; kept when etcd is away).
    admin.get('/config', async () => ({ ...deps.config.all(), 'agent.token': '(secret)' }));

    admin.get('/keypairs', async () => deps.keypairs.list());
    admin.get('/keypairs/:accessKey', { schema: { params: AccessKey } }, async (req) => deps.keypairs.info(req.params.accessKey));
    admin.post('/keypairs', { schema: { body: KeypairCreate } }, async (req, reply) => {
      const b = req.body;
      const kp = await deps.keypairs.create({ email: b.email, isAdmin: b.is_admin, resourcePolicy: b.resource_policy, rateLimit: b.rate_limit });
      return reply.status(201).send({ ...(await deps.keypairs.info(kp.accessKey)), secret_key: kp.secretKey });
    });
    admin.patch('/keypairs/:accessKey', { schema: { params: AccessKey, body: KeypairChange } }, async (req) => {
      const b = req.body;
      return deps.keypairs.update(req.params.accessKey, { isActive: b.is_active, isAdmin: b.is_admin, resourcePolicy: b.resource_policy, rateLimit: b.rate_limit });
    });
    admin.post('/keypairs/:accessKey/deactivate', { schema: { params: AccessKey } }, async (req) => deps.keypairs.update(req.params.accessKey, { isActive: false }));
    admin.post('/keypairs/:accessKey/activate', { schema: { params: AccessKey } }, async (req) => deps.keypairs.update(req.params.accessKey, { isActive: true }));
    admin.delete('/keypairs/:accessKey', { schema: { params: AccessKey } }, async (req, reply) => {
      await deps.keypairs.delete(req.params.accessKey);
      return reply.status(204).send();
    });

    // Resource groups: the row in PostgreSQL, the scheduler options in etcd (live for every manager).
    admin.get('/resource-groups', async () => deps.groups.list());
    admin.get('/resource-groups/:name', { schema: { params: GroupName } }, async (req) => deps.groups.get(req.params.name));
    admin.post('/resource-groups', { schema: { body: GroupCreate } }, async (req, reply) => reply.status(201).send(await deps.groups.create(req.body)));
    admin.patch('/resource-groups/:name', { schema: { params: GroupName, body: GroupChange } }, async (req) => deps.groups.update(req.params.name, req.body));
    admin.delete('/resource-groups/:name', { schema: { params: GroupName } }, async (req, reply) => {
      await deps.groups.delete(req.params.name);
      return reply.status(204).send();
    });
    admin.post('/resource-groups/:name/keypairs', { schema: { params: GroupName, body: GroupKeypairs } }, async (req) => deps.groups.allow(req.params.name, req.body.access_keys));
    admin.delete('/resource-groups/:name/keypairs', { schema: { params: GroupName, body: GroupKeypairs } }, async (req) => deps.groups.disallow(req.params.name, req.body.access_keys));

    admin.get('/resource-policies', async () => deps.policies.list());
    admin.get('/resource-policies/:name', { schema: { params: Type.Object({ name: PolicyName }) } }, async (req) => deps.policies.get(req.params.name));
    admin.post('/resource-policies', { schema: { body: PolicyCreate } }, async (req, reply) => reply.status(201).send(await deps.policies.create(req.body)));
    admin.patch('/resource-policies/:name', { schema: { params: Type.Object({ name: PolicyName }), body: PolicyChange } }, async (req) => deps.policies.update(req.params.name, req.body));
    admin.delete('/resource-policies/:name', { schema: { params: Type.Object({ name: PolicyName }) } }, async (req, reply) => {
      await deps.policies.delete(req.params.name);
      return reply.status(204).send();
    });

    // The live actor graph (chart as API: each node lists the events its state accepts next).
    admin.get('/actors', {
      schema: {
        querystring: Type.Object({
          session: Type.Optional(Type.String({ maxLength: 64 })), agent: Type.Optional(Type.String({ maxLength: 128 })),
          state: Type.Optional(Type.String({ maxLength: 64 })),
          kind: Type.Optional(Type.Union([Type.Literal('manager'), Type.Literal('agent'), Type.Literal('session'), Type.Literal('kernel')])),
        }, { additionalProperties: false }),
      },
    }, async (req) => ({ managerId: deps.graph.managerId, nodes: deps.graph.list(req.query) }));
    admin.get('/actors/:id', { schema: { params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 160 }) }) } }, async (req) => {
      const node = deps.graph.get(req.params.id);
      if (!node) throw new NotFound(`no live actor ${JSON.stringify(req.params.id)}`);
      return { ...node, children: deps.graph.list().filter((n) => n.parent === node.id).map((n) => n.id) };
    });

    admin.get('/jobs', async () => deps.jobs.list());
    // Run a job now (joins a run in progress); answers its result, or its failure as a 503.
    admin.post('/jobs/:name/run', { schema: { params: Type.Object({ name: Type.String({ pattern: '^[a-z-]{1,64}$' }) }) } }, async (req) => {
      try {
        return { name: req.params.name, result: await deps.jobs.runNow(req.params.name) };
      } catch (e) {
        if (e instanceof FlotillaError) throw e;
        throw new ServiceUnavailable(`job ${req.params.name} failed: ${(e as Error).message}`);
      }
    });
  }, { prefix: '/admin' });
}
