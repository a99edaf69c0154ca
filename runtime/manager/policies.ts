// Keypair resource policies (Backend.AI's keypair_resource_policies): the limits a keypair's
// sessions live within. Checked at creation inside the creating transaction, with the keypair
// row locked, so concurrent creates by one keypair cannot both slip under a limit; occupancy is
// summed from the kernels table, so it cannot drift from what runs.
import { Conflict, InvalidAPIParameters, NotFound, QuotaExceeded } from '../../schema/errors.ts';
import { addSlots, fitsIn, parseSlots, shortSlots, type ResourceSlots } from '../../schema/slots.ts';
import { FINAL_KERNEL_STATUSES, FINAL_SESSION_STATUSES } from '../../schema/status.ts';
import type { Database, DbClient } from '../stores/types.ts';

export interface ResourcePolicy {
  name: string;
  /** Live (not final) sessions at once. */
  max_concurrent_sessions: number;
  /** Slots all live kernels of the keypair may request together; a slot not named is unlimited. */
  total_resource_slots: ResourceSlots;
  /** PENDING sessions at once; null: no limit. */
  max_pending_session_count: number | null;
  /** Kernels in one session (clusterSize). */
  max_containers_per_session: number;
  /** Seconds without activity before a session is terminated (`idle-timeout`); 0: never. */
  idle_timeout: number;
  /** Seconds a session may live (`session-lifetime`); 0: no cap. */
  max_session_lifetime: number;
  max_vfolder_count: number;
}

/** What admins send: slot amounts as strings or numbers ("2g", 4). */
export type PolicyInput = Partial<Omit<ResourcePolicy, 'name' | 'total_resource_slots'>> & { total_resource_slots?: Record<string, string | number> };

/** The columns and their defaults (the schema's), applied in one place for create. */
export const POLICY_DEFAULTS: Omit<ResourcePolicy, 'name'> = {
  max_concurrent_sessions: 30, total_resource_slots: {}, max_pending_session_count: null, max_containers_per_session: 1,
  idle_timeout: 0, max_session_lifetime: 0, max_vfolder_count: 10,
};
const COLUMNS = ['max_concurrent_sessions', 'total_resource_slots', 'max_pending_session_count', 'max_containers_per_session', 'idle_timeout', 'max_session_lifetime', 'max_vfolder_count'] as const;

const FINAL_S = `(${FINAL_SESSION_STATUSES.map((s) => `'${s}'`).join(',')})`;
const FINAL_K = `(${FINAL_KERNEL_STATUSES.map((s) => `'${s}'`).join(',')})`;

type PolicyRow = Omit<ResourcePolicy, 'total_resource_slots'> & { total_resource_slots: Record<string, unknown>; created_at?: Date };

function fromRow(r: PolicyRow): ResourcePolicy {
  return {
    name: r.name, max_concurrent_sessions: r.max_concurrent_sessions, total_resource_slots: parseSlots(r.total_resource_slots),
    max_pending_session_count: r.max_pending_session_count, max_containers_per_session: r.max_containers_per_session,
    idle_timeout: r.idle_timeout, max_session_lifetime: r.max_session_lifetime, max_vfolder_count: r.max_vfolder_count,
  };
}

export class ResourcePolicies {
  constructor(private readonly db: Database) {}

  async list(): Promise<ResourcePolicy[]> {
    return (await this.db.query<PolicyRow>(`SELECT * FROM resource_policies ORDER BY name`)).rows.map(fromRow);
  }

  async get(name: string): Promise<ResourcePolicy> {
    const r = (await this.db.query<PolicyRow>(`SELECT * FROM resource_policies WHERE name = $1`, [name])).rows[0];
    if (!r) throw new NotFound(`no resource policy ${JSON.stringify(name)}`);
    return fromRow(r);
  }

  async create(p: PolicyInput & { name: string }): Promise<ResourcePolicy> {
    const full = { ...POLICY_DEFAULTS, ...p, total_resource_slots: slotsOf(p.total_resource_slots ?? {}) };
    try {
      await this.db.query(
        `INSERT INTO resource_policies (name, ${COLUMNS.join(', ')}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [full.name, ...COLUMNS.map((c) => (c === 'total_resource_slots' ? JSON.stringify(full[c]) : full[c]))],
      );
    } catch (e) {
      if ((e as { code?: string }).code === '23505') throw new Conflict(`resource policy ${JSON.stringify(p.name)} exists`);
      throw e;
    }
    return this.get(full.name);
  }

  async update(name: string, p: PolicyInput): Promise<ResourcePolicy> {
    const sets: string[] = [];
    const params: unknown[] = [name];
    for (const c of COLUMNS) {
      if (p[c] === undefined) continue;
      params.push(c === 'total_resource_slots' ? JSON.stringify(slotsOf(p[c] as Record<string, unknown>)) : p[c]);
      sets.push(`${c} = $${params.length}`);
    }
    if (sets.length) {
      const r = await this.db.query(`UPDATE resource_policies SET ${sets.join(', ')} WHERE name = $1`, params);
      if (!r.rowCount) throw new NotFound(`no resource policy ${JSON.stringify(name)}`);
    }
    return this.get(name);
  }

  async delete(name: string): Promise<void> {
    if (name === 'default') throw new Conflict('the default resource policy cannot be deleted');
    const used = await this.db.query(`SELECT 1 FROM keypairs WHERE resource_policy = $1 LIMIT 1`, [name]);
    if (used.rowCount) throw new Conflict(`resource policy ${JSON.stringify(name)} is assigned to keypairs`);
    const r = await this.db.query(`DELETE FROM resource_policies WHERE name = $1`, [name]);
    if (!r.rowCount) throw new NotFound(`no resource policy ${JSON.stringify(name)}`);
  }
}

function slotsOf(v: Record<string, unknown>): ResourceSlots {
  try { return parseSlots(v); } catch (e) { throw new InvalidAPIParameters(`total_resource_slots: ${(e as Error).message}`); }
}

/** The owner's policy (outside a transaction: for reads and early refusals). */
export async function policyOf(db: Database | DbClient, owner: string): Promise<ResourcePolicy> {
  const r = (await db.query<PolicyRow>(
    `SELECT p.* FROM keypairs k JOIN resource_policies p ON p.name = k.resource_policy WHERE k.access_key = $1`, [owner])).rows[0];
  if (!r) throw new InvalidAPIParameters(`unknown owner ${owner}`);
  return fromRow(r);
}

export const containersQuota = (policy: ResourcePolicy, kernels: number) =>
  new QuotaExceeded(`max_containers_per_session: the session asks for ${kernels} kernels, the policy ${policy.name} allows ${policy.max_containers_per_session}`);

/** A new session as its owner's policy sees it. */
export interface QuotaRequest { owner: string; kernels: number; slots: ResourceSlots }

/**
 * Check a batch of new sessions against their owners' policies, in the creating transaction:
 * for each, the QuotaExceeded naming the limit it would break, or undefined. The owners' keypair
 * rows are locked first (in one order, so two batches cannot deadlock), so creates of one
 * keypair are checked and inserted one batch after another; within a batch each session counts
 * those before it as already created.
 */
export async function checkSessionQuotas(c: DbClient, reqs: QuotaRequest[]): Promise<Array<Error | undefined>> {
  const owners = [...new Set(reqs.map((r) => r.owner))].sort();
  const policies = new Map((await c.query<PolicyRow & { access_key: string }>(
    `SELECT k.access_key, p.* FROM keypairs k JOIN resource_policies p ON p.name = k.resource_policy
      WHERE k.access_key = ANY($1::text[]) ORDER BY k.access_key FOR UPDATE OF k`, [owners])).rows.map((r) => [r.access_key, fromRow(r)]));
  const counts = new Map((await c.query<{ access_key: string; live: string; pending: string }>(
    `SELECT access_key, count(*) AS live, count(*) FILTER (WHERE status = 'PENDING') AS pending
       FROM sessions WHERE access_key = ANY($1::text[]) AND status NOT IN ${FINAL_S} GROUP BY access_key`, [owners],
  )).rows.map((r) => [r.access_key, { live: Number(r.live), pending: Number(r.pending) }]));
  const limitedOwners = owners.filter((o) => Object.keys(policies.get(o)?.total_resource_slots ?? {}).length);
  const used = new Map<string, ResourceSlots>();
  if (limitedOwners.length) {
    for (const r of (await c.query<{ access_key: string; slot: string; amount: string }>(
      `SELECT k.access_key, s.key AS slot, trim_scale(sum(s.value::numeric))::text AS amount
         FROM kernels k CROSS JOIN LATERAL jsonb_each_text(k.requested_slots) s
        WHERE k.access_key = ANY($1::text[]) AND k.status NOT IN ${FINAL_K} GROUP BY k.access_key, s.key`, [limitedOwners])).rows) {
      used.set(r.access_key, { ...used.get(r.access_key), [r.slot]: r.amount });
    }
  }
  return reqs.map((req) => {
    const policy = policies.get(req.owner);
    if (!policy) return new InvalidAPIParameters(`unknown owner ${req.owner}`);
    if (req.kernels > policy.max_containers_per_session) return containersQuota(policy, req.kernels);
    const n = counts.get(req.owner) ?? { live: 0, pending: 0 };
    if (n.live >= policy.max_concurrent_sessions) {
      return new QuotaExceeded(`max_concurrent_sessions: ${n.live} sessions are live, the policy ${policy.name} allows ${policy.max_concurrent_sessions}`);
    }
    if (policy.max_pending_session_count !== null && n.pending >= policy.max_pending_session_count) {
      return new QuotaExceeded(`max_pending_session_count: ${n.pending} sessions are PENDING, the policy ${policy.name} allows ${policy.max_pending_session_count}`);
    }
    const limit = policy.total_resource_slots;
    const limited = Object.keys(limit);
    if (limited.length) {
      const inUse = used.get(req.owner) ?? {};
      const wanted: ResourceSlots = {};
      for (const k of limited) wanted[k] = addSlots({ [k]: inUse[k] ?? '0' }, { [k]: req.slots[k] ?? '0' })[k];
      if (!fitsIn(wanted, limit)) {
        const over = shortSlots(wanted, limit).map((k) => `${k} (in use ${inUse[k] ?? '0'} + requested ${req.slots[k] ?? '0'} > ${limit[k]})`);
        return new QuotaExceeded(`total_resource_slots: ${over.join(', ')} under the policy ${policy.name}`);
      }
      used.set(req.owner, addSlots(inUse, req.slots));
    }
    counts.set(req.owner, { live: n.live + 1, pending: n.pending + 1 });
    return undefined;
  });
}
