// What the session routes do, apart from HTTP: validate and create a session durably, find one
// by name or id for its owner, describe it as API.md does, destroy, restart, read its logs.
import { randomUUID } from 'node:crypto';
import type { KernelInput } from '../../actors/kernel.ts';
import type { LiveClusterConfig } from '../../config/live.ts';
import {
  ImageNotFound, InstanceNotAvailable, InvalidAPIParameters, SessionAlreadyExists, SessionNotFound, ServiceUnavailable,
} from '../../schema/errors.ts';
import { addSlots, fitsIn, parseSlots, shortSlots, type ResourceSlots } from '../../schema/slots.ts';
import { isFinalSessionStatus, OCCUPYING_KERNEL_STATUSES, type SessionStatus } from '../../schema/status.ts';
import type { Database, DbClient } from '../stores/types.ts';
import { GroupCommit } from './group-commit.ts';
import { checkSessionQuotas } from './policies.ts';
import type { VfolderService } from './vfolders.ts';
import { UUID } from '../../schema/ids.ts';
import type { AgentRegistry } from './agents.ts';
import type { ResourceGroups } from './resource-groups.ts';
import type { Scheduler } from './scheduler.ts';
import type { NewSession, Supervisor } from './supervisor.ts';

export const SESSION_NAME = /^[a-zA-Z0-9_.-]{4,64}$/;

export interface CreateRequest {
  name: string;
  image: string;
  type: 'interactive' | 'batch';
  clusterSize: number;
  clusterMode: 'single-node' | 'multi-node';
  resources: Record<string, unknown>;
  environ: Record<string, string>;
  mounts: string[];
  /** Folder name → path in the container (Backend.AI's mount_map). */
  mountMap: Record<string, string>;
  resourceGroup: string;
  enqueueOnly: boolean;
  maxWaitSeconds: number;
  reuseIfExists: boolean;
  startupCommand?: string;
  tag?: string;
}

export interface SessionRow {
  id: string; name: string; access_key: string; image: string; type: string; status: SessionStatus;
  status_info: string | null; status_data: Record<string, unknown> | null; status_history: Array<{ status: SessionStatus; at: string }>;
  requested_slots: ResourceSlots; created_at: Date; terminated_at: Date | null; num_queries: string;
}

/** New sessions per creating transaction at most (a burst of creates is written in batches). */
export const MAX_CREATE_BATCH = 500;

export class SessionService {
  /** Creates arriving together are checked and inserted in one transaction. */
  private readonly creates = new GroupCommit<NewSession, Error | undefined>((batch) => this.createBatch(batch), MAX_CREATE_BATCH);

  private async createBatch(batch: NewSession[]): Promise<Array<Error | undefined>> {
    const admit = (c: DbClient, sessions: NewSession[]) => this.admit(c, sessions);
    try {
      return await this.deps.supervisor.createMany(batch, admit);
    } catch (err) {
      // One session's rows broke the transaction with a data or integrity error the checks did
      // not foresee: each alone then, so only that create fails. (Not when the store is down:
      // that would only repeat the failure once per create.)
      if (batch.length === 1 || !/^2[23]/.test((err as { code?: string }).code ?? '')) throw err;
      const out: Array<Error | undefined> = [];
      for (const s of batch) out.push(await this.deps.supervisor.createMany([s], admit).then(([r]) => r, (e: Error) => e));
      return out;
    }
  }

  /** A session bigger than every alive agent of its group could ever hold is refused at once (Backend.AI's InstanceNotAvailable). */
  private exceedsEveryAgent(n: NewSession, alive: Array<Record<string, string>>): Error | undefined {
    // Resources are per kernel (Backend.AI's); a single-node cluster needs all of them on one agent.
    const onOneAgent = n.clusterMode === 'single-node' ? n.requestedSlots : n.kernels[0].requestedSlots;
    if (!alive.length || alive.some((slots) => fitsIn(onOneAgent, slots))) return undefined;
    const short = [...new Set(alive.flatMap((slots) => shortSlots(onOneAgent, slots)))];
    return new InstanceNotAvailable(`the requested ${short.join(', ')} exceeds the capacity of every agent in resource group ${n.resourceGroup}`);
  }

  /** The creating transaction's checks, for a batch: the resource group may be used and can hold the session, then the owner's policy. */
  private async admit(c: DbClient, sessions: NewSession[]): Promise<Array<Error | undefined>> {
    const slotsByGroup = new Map<string, Array<Record<string, string>>>();
    const aliveIn = (group: string) => {
      let slots = slotsByGroup.get(group);
      if (!slots) slotsByGroup.set(group, slots = this.deps.agents.aliveSlots(group));
      return slots;
    };
    const refused = (await this.deps.groups.checkUse(c, sessions.map((n) => ({ accessKey: n.accessKey, name: n.resourceGroup }))))
      .map((e, i) => e ?? this.exceedsEveryAgent(sessions[i], aliveIn(sessions[i].resourceGroup)));
    const open = sessions.flatMap((_n, i) => (refused[i] ? [] : [i]));
    if (!open.length) return refused;
    const quota = await checkSessionQuotas(c, open.map((i) => ({ owner: sessions[i].accessKey, kernels: sessions[i].kernels.length, slots: sessions[i].requestedSlots })));
    open.forEach((i, j) => { refused[i] = quota[j]; });
    return refused;
  }

  constructor(private readonly deps: {
    db: Database; supervisor: Supervisor; agents: AgentRegistry; scheduler: Scheduler; config: LiveClusterConfig; vfolders: VfolderService;
    groups: ResourceGroups;
  }) {}

  /** Alias → full image name; full names pass as they are. */
  resolveImage = (image: string): string => {
    const aliases = this.deps.config.get('images.aliases') as Record<string, string>;
    return aliases[image] ?? image;
  };

  async create(owner: string, req: CreateRequest): Promise<{ sessionId: string; sessionName: string; status: SessionStatus | 'TIMEOUT'; created: boolean }> {
    const { supervisor, agents, scheduler, config } = this.deps;
    if (!SESSION_NAME.test(req.name)) throw new InvalidAPIParameters('name: 4 to 64 characters of letters, digits, "_", "." and "-"');
    // A name shaped like an id could never be reached by name: GET /session/{ref} reads a UUID as an id.
    if (UUID.test(req.name)) throw new InvalidAPIParameters('name: must not be a UUID (a session is reached by its id or its name)');
    if (req.reuseIfExists) {
      const live = await this.findLive(owner, req.name);
      if (live) return { sessionId: live.id, sessionName: live.name, status: live.status, created: false };
    }
    let requested: ResourceSlots;
    try {
      requested = parseSlots({ ...(config.get('session.default_resources') as Record<string, unknown>), ...req.resources });
    } catch (e) { throw new InvalidAPIParameters(`config.resources: ${(e as Error).message}`); }
    // Below these Docker would not limit the container at all (0) or refuses it.
    const leastAsSet = config.get('session.min_resources') as Record<string, unknown>;
    const least = parseSlots(leastAsSet);
    const tooSmall = Object.entries(least).filter(([slot, min]) => !fitsIn({ [slot]: min }, { [slot]: requested[slot] ?? '0' }));
    if (tooSmall.length) {
      throw new InvalidAPIParameters(`config.resources: ${tooSmall.map(([slot]) => `${slot} must be at least ${String(leastAsSet[slot])}`).join(', ')} (session.min_resources)`);
    }
    const image = this.resolveImage(req.image);
    if (!agents.hasImage(image)) throw new ImageNotFound(`unknown image ${JSON.stringify(req.image)}`);
    const size = req.clusterSize;

    // Folders the owner may use, resolved now: a kernel mounts exactly these, wherever it lands.
    const mounts = req.mounts.length ? await this.deps.vfolders.resolveMounts(owner, req.mounts, req.mountMap) : [];
    const sessionId = randomUUID();
    const deadlines = supervisor.kernelDeadlines();
    // Backend.AI's cluster naming: main1, then sub1, sub2, ... (cluster_idx counts within a role).
    const hosts = Array.from({ length: size }, (_, i) => (i === 0 ? 'main1' : `sub${i}`));
    const cluster = size > 1 ? { size, mode: req.clusterMode, hosts } : undefined;
    const kernels: KernelInput[] = hosts.map((hostname, i) => ({
      kernelId: randomUUID(), sessionId, role: i === 0 ? 'main' : 'sub', idx: i === 0 ? 1 : i, hostname, image, requestedSlots: requested, deadlines,
      owner, environ: req.environ, mounts, ...(cluster ? { cluster } : {}),
    }));
    const total = kernels.reduce<ResourceSlots>((a, k) => addSlots(a, k.requestedSlots), {});
    const refused = await this.creates.run({
      sessionId, name: req.name, accessKey: owner, image, type: req.type, clusterMode: req.clusterMode, clusterSize: req.clusterSize,
      resourceGroup: req.resourceGroup, requestedSlots: total, kernels, environ: req.environ, mounts,
      startupCommand: req.startupCommand, tag: req.tag,
    });
    if (refused) {
      // Another create of the same name won the insert: for a get-or-create that is the session to reuse.
      if (req.reuseIfExists && refused instanceof SessionAlreadyExists) {
        const live = await this.findLive(owner, req.name);
        if (live) return { sessionId: live.id, sessionName: live.name, status: live.status, created: false };
      }
      throw refused;
    }
    scheduler.request(false); // a new session frees nothing: the kept occupancy will do
    if (req.enqueueOnly) return { sessionId, sessionName: req.name, status: 'PENDING', created: true };
    const waitMs = req.maxWaitSeconds > 0 ? req.maxWaitSeconds * 1000 : config.get('session.default_max_wait');
    const status = await this.waitFor(sessionId, (s) => s === 'RUNNING' || isFinalSessionStatus(s), waitMs);
    return { sessionId, sessionName: req.name, status: status ?? 'TIMEOUT', created: true };
  }

  /** Wait until the session's committed status satisfies ok; undefined on timeout. */
  waitFor(sessionId: string, ok: (s: SessionStatus) => boolean, ms: number): Promise<SessionStatus | undefined> {
    const { supervisor } = this.deps;
    const current = supervisor.snapshot(sessionId);
    return new Promise((resolve) => {
      const done = (v: SessionStatus | undefined) => { clearTimeout(timer); supervisor.off('status', listener); resolve(v); };
      const listener = (id: string, status: SessionStatus) => { if (id === sessionId && ok(status)) done(status); };
      const timer = setTimeout(() => done(undefined), ms);
      supervisor.on('status', listener);
      // Already there (and durable) before we started listening.
      if (!current) void this.get(sessionId).then((row) => { if (row && ok(row.status)) done(row.status); }).catch(() => undefined);
    });
  }

  private async findLive(owner: string, name: string): Promise<SessionRow | undefined> {
    return (await this.deps.db.query<SessionRow>(
      `SELECT * FROM sessions WHERE access_key = $1 AND name = $2 AND status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED')`, [owner, name])).rows[0];
  }

  private async get(sessionId: string): Promise<SessionRow | undefined> {
    return (await this.deps.db.query<SessionRow>(`SELECT * FROM sessions WHERE id = $1`, [sessionId])).rows[0];
  }

  /** By id or name, the owner's only: another tenant's session is "not found", exactly like a missing one. */
  async find(owner: string, ref: string): Promise<SessionRow> {
    const byId = UUID.test(ref);
    const row = (await this.deps.db.query<SessionRow>(
      `SELECT * FROM sessions WHERE access_key = $1 AND ${byId ? 'id = $2::uuid' : 'name = $2'}
       ORDER BY (status IN ('TERMINATED', 'ERROR', 'CANCELLED')), created_at DESC LIMIT 1`, [owner, ref])).rows[0];
    if (!row) throw new SessionNotFound(`no session ${JSON.stringify(ref)}`);
    return row;
  }

  async info(row: SessionRow) {
    const kernels = (await this.deps.db.query<{ id: string; cluster_role: string; cluster_hostname: string; agent_id: string | null; container_id: string | null; status: string }>(
      `SELECT id, cluster_role, cluster_hostname, agent_id, container_id, status FROM kernels WHERE session_id = $1 ORDER BY cluster_role <> 'main', cluster_idx`, [row.id])).rows;
    const occupying = kernels.some((k) => (OCCUPYING_KERNEL_STATUSES as readonly string[]).includes(k.status));
    return {
      sessionId: row.id, sessionName: row.name, image: row.image, type: row.type, status: row.status,
      statusInfo: row.status_info, statusData: row.status_data, statusHistory: row.status_history,
      occupiedSlots: occupying ? row.requested_slots : {}, requestedSlots: row.requested_slots,
      creationTime: row.created_at.toISOString(), terminationTime: row.terminated_at?.toISOString() ?? null,
      numQueriesExecuted: Number(row.num_queries),
      kernels: kernels.map((k) => ({ kernelId: k.id, role: k.cluster_role, hostname: k.cluster_hostname, agentId: k.agent_id, containerId: k.container_id, status: k.status })),
    };
  }

  async list(owner: string, opts: { status?: string[]; limit: number; offset: number }) {
    const where = opts.status?.length ? 'AND status = ANY($2::text[])' : '';
    const params: unknown[] = [owner];
    if (where) params.push(opts.status);
    const rows = (await this.deps.db.query<SessionRow & { total: string }>(
      `SELECT *, count(*) OVER () AS total FROM sessions WHERE access_key = $1 ${where}
       ORDER BY created_at DESC LIMIT ${opts.limit} OFFSET ${opts.offset}`, params)).rows;
    return {
      total: rows.length ? Number(rows[0].total) : 0,
      items: rows.map((r) => ({
        sessionId: r.id, sessionName: r.name, name: r.name, image: r.image, status: r.status, statusInfo: r.status_info,
        creationTime: r.created_at.toISOString(), terminationTime: r.terminated_at?.toISOString() ?? null,
      })),
    };
  }

  /** Idempotent: a session already ended answers at once. */
  async destroy(row: SessionRow, forced: boolean): Promise<SessionStatus> {
    if (isFinalSessionStatus(row.status)) return row.status;
    const { supervisor, config } = this.deps;
    if (!supervisor.send(row.id, { type: 'TERMINATE', reason: forced ? 'force-terminated' : 'user-requested', forced })) {
      throw new ServiceUnavailable('the session is not hosted by this manager yet; try again');
    }
    const ms = config.get('session.terminating_timeout') + 5000;
    return (await this.waitFor(row.id, isFinalSessionStatus, ms)) ?? 'TERMINATING';
  }

  async restart(row: SessionRow): Promise<void> {
    if (row.status !== 'RUNNING') throw new InvalidAPIParameters(`a session can be restarted only while RUNNING (it is ${row.status})`);
    this.deps.supervisor.send(row.id, { type: 'RESTART' });
    await this.waitFor(row.id, (s) => s === 'RUNNING' || isFinalSessionStatus(s), this.deps.config.get('session.creating_timeout'));
  }

  async logs(row: SessionRow): Promise<string> {
    const k = (await this.deps.db.query<{ id: string; agent_id: string | null; status: string }>(
      `SELECT id, agent_id, status FROM kernels WHERE session_id = $1 AND cluster_role = 'main'`, [row.id])).rows[0];
    if (!k?.agent_id) return '';
    try {
      return (await this.deps.agents.call(k.agent_id, 'getLogs', { kernelId: k.id })).logs;
    } catch (e) {
      if (isFinalSessionStatus(row.status)) return ''; // the container is gone with the session
      throw new ServiceUnavailable(`cannot read the logs: ${(e as Error).message}`);
    }
  }
}
