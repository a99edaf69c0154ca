// The manager process: stores, schema, cluster config, keypairs, the supervisor with its
// restored actors, the agent gateway, the scheduler and the HTTP API, in the order that makes
// each one's dependencies ready first.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server as SocketServer } from 'socket.io';
import { openClusterConfig, type LiveClusterConfig } from '../../config/live.ts';
import type { ProcessSettings } from '../../config/settings.ts';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { migrate } from '../../schema/migrate.ts';
import { API_VERSION } from '../../schema/signing.ts';
import type { Logger } from '../log.ts';
import type { Leadership, Stores } from '../stores/types.ts';
import { ActorGraph } from './actor-graph.ts';
import { AgentRegistry } from './agents.ts';
import { attachInspect } from './inspect.ts';
import { agentKernelEffects } from './effects.ts';
import { buildApp, type App } from './http/app.ts';
import { sessionRoutes } from './http/sessions.ts';
import { fileRoutes } from './http/files.ts';
import { vfolderRoutes } from './http/vfolders.ts';
import { attachExecuteStream } from './http/stream.ts';
import { adminRoutes } from './http/admin.ts';
import { dashboardRoutes } from './http/dashboard.ts';
import { eventRoutes } from './http/events.ts';
import { resourceRoutes } from './http/resource.ts';
import { authRoutes } from './http/auth.ts';
import { pruneEndedSessions, terminateExpiredSessions, terminateIdleSessions } from './housekeeping.ts';
import { PeriodicJobs } from './jobs.ts';
import { ResourcePolicies } from './policies.ts';
import { rateLimiter } from './rate-limit.ts';
import { aggregateUsage, sampleKernelUsage } from './usage.ts';
import { Keypairs, SecretBox } from './keypairs.ts';
import { reconcileAgent } from './reconcile.ts';
import { ExecutionService } from './execution.ts';
import { ServiceUnavailable } from '../../schema/errors.ts';
import { AgentLossPolicy } from './agent-loss.ts';
import { ResourceGroups } from './resource-groups.ts';
import { Scheduler } from './scheduler.ts';
import { ManagerMetrics } from './metrics.ts';
import { SessionService } from './sessions.ts';
import { StandbyAgentGate } from './standby-gate.ts';
import { Supervisor } from './supervisor.ts';
import { VfolderService } from './vfolders.ts';
import { WatchGateway } from './watch.ts';

export const MANAGER_VERSION = '0.1.0';
/** The etcd election managers campaign in (the value is the leader's URL). */
export const LEADER_ELECTION = 'flotilla/manager-leader';
/** The accept queue of the manager's port (the kernel caps it at net.core.somaxconn). */
const LISTEN_BACKLOG = 4096;

export interface RunningManager {
  url: string;
  port: number;
  app: App;
  supervisor: Supervisor;
  agents: AgentRegistry;
  scheduler: Scheduler;
  groups: ResourceGroups;
  sessions: SessionService;
  config: LiveClusterConfig;
  vfolders: VfolderService;
  policies: ResourcePolicies;
  jobs: PeriodicJobs;
  graph: ActorGraph;
  /** The socket.io server (/agent, /watch, /inspect). */
  io: SocketServer;
  watch: WatchGateway;
  keypairs: Keypairs;
  /** The agent token from etcd (agents present it on /agent). */
  agentToken: string;
  /** Set only when this start created the admin keypair (print it once). */
  createdAdmin?: { accessKey: string; secretKey: string };
  /** Whether this manager holds the leader lease now (a standby that won becomes leader without a restart). */
  isLeader(): boolean;
  close(): Promise<void>;
}

export async function startManager(opts: { settings: ProcessSettings; stores: Stores; log: Logger }): Promise<RunningManager> {
  const { settings, stores } = opts;
  const managerId = settings.managerId ?? `${hostname()}:${process.pid}`;
  const log = opts.log.child({ managerId });
  const { db, liveness } = stores;

  await migrate(db);
  const config = await openClusterConfig(stores.config, (key, err) => log.error({ key, err: err.message }, 'bad cluster config value ignored'));
  let agentToken = settings.agentToken ?? config.get('agent.token');
  if (!agentToken) {
    agentToken = randomBytes(24).toString('base64url');
    await stores.config.put(`${CLUSTER_CONFIG_PREFIX}agent.token`, agentToken);
  }
  const keypairs = new Keypairs(db, await SecretBox.open(stores.config, settings.secretEncryptionKey));
  const createdAdmin = await keypairs.bootstrapAdmin({ accessKey: settings.adminAccessKey, secretKey: settings.adminSecretKey });

  const graph = new ActorGraph({ managerId: `manager:${hostname()}:${process.pid}` });
  const agents = new AgentRegistry({
    db, liveness, log, graph,
    token: () => settings.agentToken ?? config.get('agent.token') ?? agentToken,
    heartbeatIntervalMs: () => config.get('heartbeat.interval'),
    heartbeatTimeoutMs: () => config.get('heartbeat.timeout'),
    reconnectTimeoutMs: () => config.get('agent.reconnect_timeout'),
    rpcTimeoutMs: () => config.get('rpc.timeout'),
  });
  const supervisor = new Supervisor({ db, log, effects: agentKernelEffects(agents, config), graph });
  supervisor.kernelDeadlines = () => ({
    preparingMs: config.get('session.preparing_timeout'),
    creatingMs: config.get('session.creating_timeout'),
    terminatingMs: config.get('session.terminating_timeout'),
  });
  const groups = new ResourceGroups({ db, config: stores.config, log });
  await groups.open();
  const scheduler = new Scheduler({ db, supervisor, agents, groups, log, intervalMs: () => config.get('scheduler.interval') });
  groups.onChange(() => scheduler.request());
  const agentLoss = new AgentLossPolicy({ agents, supervisor, config, log });
  const vfolders = new VfolderService({ db, config, log, root: settings.vfolderRoot || undefined });
  const sessions = new SessionService({ db, supervisor, agents, scheduler, config, vfolders, groups });

  config.onChange((k) => { if (k === 'heartbeat.timeout' || k === 'heartbeat.interval') agents.retime(); });
  agents.on('registered', (agentId, containers) => {
    void reconcileAgent({ agentId, containers, supervisor, agents, log }).catch((err) => log.error({ agentId, err }, 'reconciliation failed'));
    scheduler.request();
  });
  agents.on('status', () => scheduler.request());
  agents.on('kernelExited', (e) => supervisor.send(e.sessionId, { type: 'KERNEL_EXITED', kernelId: e.kernelId, exitCode: e.exitCode, oomKilled: e.oomKilled }));
  supervisor.on('status', (_id, status) => { if (status === 'TERMINATED' || status === 'ERROR' || status === 'CANCELLED') scheduler.request(); });

  // Active/standby (DESIGN.md §9): only the manager holding the etcd election lease hosts the
  // actors, accepts agents and runs the scheduler and the periodic jobs; a standby answers
  // /health (leader: false) and 503 elsewhere, naming the leader, until it wins the election.
  let leading = false;
  let url = '';
  const isLeader = () => leading;
  const lead = async () => {
    const started = Date.now();
    await agents.restore();
    const restored = await supervisor.restore();
    leading = true;
    agentLoss.armRestored();
    const parked = agents.parkedCount;
    await agents.accept();
    scheduler.start();
    log.info({ restored, parkedAgents: parked, ms: Date.now() - started }, 'leading: sessions restored');
  };
  const standDown = async (why: string) => {
    if (!leading) return;
    leading = false;
    log.error({ why }, 'leadership lost: standing down (actors released, agents dropped) and campaigning again');
    scheduler.stop();
    await scheduler.idle();
    agentLoss.close();
    await agents.close();
    supervisor.releaseAll();
  };

  const stopFollowingKeypairs = await keypairs.follow(liveness).catch((err: Error) => {
    log.warn({ err: err.message }, 'keypair changes of other managers not followed (Redis unavailable)');
    return async () => undefined;
  });
  const rateLimit = rateLimiter(liveness, log);
  const app = buildApp({ log, keypairs, rateLimit });
  app.get('/', async () => ({ version: API_VERSION, manager: MANAGER_VERSION }));
  app.get('/manager/announcement', async () => ({ enabled: false, message: '' }));
  app.get('/health', async () => {
    const check = async (p: Promise<unknown>) => p.then(() => 'ok', (e: Error) => `down: ${e.message}`);
    const [postgres, redis, etcd] = await Promise.all([check(db.ping()), check(liveness.ping()), check(stores.config.ping())]);
    const leaderUrl = leading ? url : await stores.config.leader(LEADER_ELECTION).catch(() => undefined);
    return {
      ok: postgres === 'ok', leader: leading, leaderUrl: leaderUrl ?? null, version: MANAGER_VERSION, stores: { postgres, redis, etcd },
      sessions: supervisor.size, agents: agents.list().length, prepared: supervisor.prepared, parkedAgents: agents.parkedCount,
    };
  });
  const metrics = new ManagerMetrics({ isLeader, sessionStatusCounts: () => supervisor.statusCounts(), agents: () => agents.list() });
  app.get('/metrics', { config: { unsigned: true } }, async (_req, reply) => reply.type(metrics.contentType).send(await metrics.text()));
  app.addHook('onResponse', async (req, reply) => {
    metrics.countRequest(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
  });
  app.addHook('onRequest', async (req) => {
    // A standby answers its health and metrics too (monitoring scrapes every manager).
    if (leading || req.url === '/health' || req.url === '/' || req.url === '/metrics') return;
    const leaderUrl = await stores.config.leader(LEADER_ELECTION).catch(() => undefined);
    throw new ServiceUnavailable(`this manager is a standby; the leader is ${leaderUrl ?? 'not elected yet'}`, { leader: leaderUrl ?? null });
  });
  const watch = new WatchGateway({ db, keypairs, log, fanOut: !!settings.redisUrl });
  const execution = new ExecutionService({ db, agents, supervisor, log, onOutput: (o) => watch.publishOutput(o) });
  sessionRoutes(app, sessions, execution);
  fileRoutes(app, { db, agents, sessions, config });
  vfolderRoutes(app, { vfolders });
  const policies = new ResourcePolicies(db);
  const jobs = new PeriodicJobs({ db, config, log, isLeader });
  const housekeeping = { db, supervisor, config, log, attached: (id: string) => execution.isAttached(id) };
  jobs.add('idle-sessions', 'jobs.idle_check', () => terminateIdleSessions(housekeeping));
  jobs.add('session-lifetime', 'jobs.lifetime_check', () => terminateExpiredSessions(housekeeping));
  jobs.add('usage-sample', 'jobs.usage_sample', (signal) => sampleKernelUsage({ db, agents, log }, signal));
  jobs.add('usage-aggregate', 'jobs.usage_aggregate', () => aggregateUsage({ db }));
  jobs.add('retention-prune', 'jobs.retention_prune', () => pruneEndedSessions(housekeeping));
  jobs.add('vfolder-transfer-sweep', 'jobs.transfer_sweep', () => vfolders.sweepExpiredTransfers());
  adminRoutes(app, { config, agents, keypairs, policies, jobs, graph, groups });
  resourceRoutes(app, { db });
  eventRoutes(app, { watch });
  authRoutes(app);
  dashboardRoutes(app);

  // After a takeover every agent dials the new leader at once: connections beyond the accept
  // queue are dropped and TCP retries them only after 1, 3, 7 s (Node's default queue is 511).
  await app.listen({ host: settings.managerHost, port: settings.managerPort, backlog: LISTEN_BACKLOG });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : settings.managerPort;
  url = `http://${settings.managerHost === '0.0.0.0' ? '127.0.0.1' : settings.managerHost}:${port}`;
  const io = new SocketServer(app.server, { serveClient: false, maxHttpBufferSize: 16 * 1024 * 1024 });
  // Several managers share /watch's fan-out through Redis (the all-in-one mode has one manager).
  const adapterClients = settings.redisUrl ? redisAdapterClients(settings.redisUrl, log) : undefined;
  if (adapterClients) io.adapter(createAdapter(adapterClients.pub, adapterClients.sub, { key: `flotilla:${settings.etcdNamespace ?? ''}socket.io` }));
  // A standby refuses watchers (they dial the next address) and sends agents to a live leader;
  // an agent whose leader does not answer is parked here until this manager leads or finds it.
  for (const nsp of ['/watch', '/inspect']) io.of(nsp).use((_socket, next) => next(leading ? undefined : new Error('standby manager: not the leader')));
  const standbyGate = new StandbyAgentGate({
    self: () => url, leader: () => stores.config.leader(LEADER_ELECTION), log,
    // The dead leader's lease lapses within its TTL; the election and the restore take a little more.
    parkLimitMs: () => 2 * 1000 * config.get('manager.leader_lease_ttl') + 2000,
  });
  io.of('/agent').use((_socket, next) => {
    if (leading) { next(); return; }
    void standbyGate.liveLeaderElsewhere().then((leader) => {
      if (leading || !leader) { next(); return; }
      next(Object.assign(new Error(`standby manager: the leader is ${leader}`), { data: { leader } }));
    });
  });
  standbyGate.start(agents, isLeader);
  agents.attach(io.of('/agent'));
  watch.attach(io.of('/watch'));
  attachInspect(io.of('/inspect'), { graph, keypairs });
  supervisor.on('committed', (events) => { watch.publish(events); metrics.countEvents(events); });
  const executeStream = attachExecuteStream(app.server, { keypairs, sessions, execution, log });
  jobs.start();
  log.info({ url }, 'manager listening');
  // Campaign with the address agents and clients reach this manager at; wait to lead.
  // A campaign that fails (etcd unreachable) is tried again; a leadership lost stands the
  // manager down first. Either way no second leader can appear: etcd grants one lease.
  let closing = false;
  let leadership: Leadership;
  // A standby keeps every live session's actor built from its latest snapshot (not started), so
  // a takeover only catches up with the rows changed since and starts them.
  let preparing = false;
  const prepareTakeover = (): void => {
    if (preparing) return;
    preparing = true;
    let first = true;
    const tick = (): void => {
      if (leading || closing) { preparing = false; return; }
      const started = Date.now();
      supervisor.prepareTakeover().then(
        (prepared) => {
          if (first && !leading) log.info({ prepared, ms: Date.now() - started }, 'standby: takeover prepared');
          first = false;
          setTimeout(tick, config.get('manager.standby_prepare_interval')).unref();
        },
        (err: Error) => { log.warn({ err: err.message }, 'standby: preparing a takeover failed'); setTimeout(tick, config.get('manager.standby_prepare_interval')).unref(); },
      );
    };
    tick();
  };
  let firstTerm!: () => void;
  const firstElected = new Promise<void>((r) => { firstTerm = r; });
  const campaign = (): void => {
    if (closing) return;
    const c = stores.config.campaign(LEADER_ELECTION, url, config.get('manager.leader_lease_ttl'));
    leadership = c;
    prepareTakeover();
    c.onLost((err) => { void standDown(err.message).then(campaign); });
    c.elected.then(
      () => lead().then(firstTerm, (err: Error) => { log.error({ err: err.message }, 'taking the lead failed: resigning'); void c.resign().then(() => setTimeout(campaign, 1000)); }),
      (err: Error) => { log.warn({ err: err.message }, 'campaign failed: trying again'); setTimeout(campaign, 1000).unref(); },
    );
  };
  campaign();
  if (!leadership!.isLeader) log.info('standby: waiting for the leader lease');
  await firstElected;

  return {
    url, port, app, supervisor, agents, scheduler, sessions, config, keypairs, agentToken, createdAdmin, vfolders, policies, jobs, graph, io, watch, groups,
    isLeader,
    async close() {
      closing = true;
      standbyGate.stop();
      await jobs.stop();
      scheduler.stop();
      await scheduler.idle();
      agentLoss.close();
      io.close();
      executeStream.close();
      await agents.close();
      await app.close();
      await supervisor.close();
      await leadership.resign();
      await groups.close();
      await config.close();
      await stopFollowingKeypairs();
      await rateLimit.close();
      graph.close();
      await adapterClients?.close();
    },
  };
}

/** The publish and subscribe connections of the socket.io Redis adapter (RESP2, as the rest). */
function redisAdapterClients(url: string, log: Logger): { pub: Redis; sub: Redis; close(): Promise<void> } {
  const pub = new Redis(url, { protocol: 2, maxRetriesPerRequest: null, retryStrategy: (n: number) => Math.min(100 * n, 1000) });
  const sub = pub.duplicate();
  let warned = 0;
  const onError = (err: Error) => { if (Date.now() - warned > 60_000) { warned = Date.now(); log.warn({ err: err.message }, 'socket.io Redis adapter: Redis unavailable'); } };
  pub.on('error', onError);
  sub.on('error', onError);
  return { pub, sub, async close() { pub.disconnect(); sub.disconnect(); } };
}
