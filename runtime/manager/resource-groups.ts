// Resource groups (Backend.AI's scaling groups): the partitions agents join by config and
// sessions are scheduled within. The group row (identity, activity, which keypairs may use it)
// is in PostgreSQL; its scheduler options are in etcd under RESOURCE_GROUP_PREFIX, watched by
// every manager, so an operator changes a group's sequencer or timeouts live (through the admin
// API or etcdctl) without a restart.
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { Conflict, Forbidden, InvalidAPIParameters, NotFound } from '../../schema/errors.ts';
import type { Logger } from '../log.ts';
import type { ConfigStore, Database, DbClient } from '../stores/types.ts';

export const RESOURCE_GROUP_PREFIX = 'flotilla/resource-groups/';
export const RESOURCE_GROUP_NAME = '^[a-zA-Z0-9_.-]{1,64}$';

/** A group's scheduler options as stored in etcd and sent by admins (Backend.AI's names). */
export const SchedulerOptions = Type.Object({
  scheduler: Type.Union([Type.Literal('fifo'), Type.Literal('lifo'), Type.Literal('drf')]),
  agent_selector: Type.Union([Type.Literal('dispersed'), Type.Literal('concentrated'), Type.Literal('roundrobin')]),
  /** Seconds a session may stay PENDING before it is CANCELLED (`pending-timeout`); 0: forever. */
  pending_timeout: Type.Integer({ minimum: 0, maximum: 365 * 86400 }),
  /** Failed placement passes after which the head of the queue stops blocking the sessions behind it; 0: it always blocks (strict order). */
  num_retries_to_skip: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
}, { additionalProperties: false });
export type SchedulerOptions = Static<typeof SchedulerOptions>;
export const SchedulerOptionsPatch = Type.Partial(SchedulerOptions, { additionalProperties: false });
export type SchedulerOptionsPatch = Static<typeof SchedulerOptionsPatch>;
const checkPatch = Compile(SchedulerOptionsPatch);

/** Every option's default, applied here and nowhere else (Backend.AI's defaults). */
export const DEFAULT_SCHEDULER_OPTIONS: SchedulerOptions = {
  scheduler: 'fifo', agent_selector: 'dispersed', pending_timeout: 0, num_retries_to_skip: 0,
};

export interface ResourceGroup extends SchedulerOptions {
  name: string;
  description: string;
  is_active: boolean;
  /** Keypairs given this group (every keypair may use `default`; admins may use every group). */
  allowed_keypairs: string[];
  created_at: string;
}

export class ResourceGroups {
  private readonly options = new Map<string, SchedulerOptionsPatch>();
  private readonly listeners: Array<(group: string) => void> = [];
  private stopWatch?: () => Promise<void>;

  constructor(private readonly deps: { db: Database; config: ConfigStore; log: Logger }) {}

  /** Load every group's stored options and follow changes. */
  async open(): Promise<void> {
    const apply = (key: string, raw: string | undefined) => {
      const name = key.slice(RESOURCE_GROUP_PREFIX.length);
      if (raw === undefined) this.options.delete(name);
      else {
        try {
          const v: unknown = JSON.parse(raw);
          if (!checkPatch.Check(v)) throw new Error([...checkPatch.Errors(v)].map((e) => `${e.instancePath || '/'} ${e.message}`).join('; '));
          this.options.set(name, v);
        } catch (e) {
          // The last good value stays: a typo in etcd must not change how a live group schedules.
          this.deps.log.warn({ resourceGroup: name, err: (e as Error).message }, 'bad resource group options in etcd ignored');
          return;
        }
      }
      for (const l of this.listeners) l(name);
    };
    for (const [k, v] of Object.entries(await this.deps.config.getPrefix(RESOURCE_GROUP_PREFIX))) apply(k, v);
    this.stopWatch = await this.deps.config.watchPrefix(RESOURCE_GROUP_PREFIX, apply);
  }

  async close(): Promise<void> { await this.stopWatch?.(); }

  onChange(cb: (group: string) => void): void { this.listeners.push(cb); }

  /** The group's scheduler options with the defaults applied. */
  optionsOf(name: string): SchedulerOptions {
    return { ...DEFAULT_SCHEDULER_OPTIONS, ...this.options.get(name) };
  }

  async list(): Promise<ResourceGroup[]> {
    const rows = (await this.deps.db.query<GroupRow>(`${SELECT} GROUP BY g.name ORDER BY g.name`)).rows;
    return rows.map((r) => this.fromRow(r));
  }

  async get(name: string): Promise<ResourceGroup> {
    const r = (await this.deps.db.query<GroupRow>(`${SELECT} WHERE g.name = $1 GROUP BY g.name`, [name])).rows[0];
    if (!r) throw new NotFound(`no resource group ${JSON.stringify(name)}`);
    return this.fromRow(r);
  }

  async create(g: { name: string; description?: string; is_active?: boolean } & SchedulerOptionsPatch): Promise<ResourceGroup> {
    try {
      await this.deps.db.query(`INSERT INTO resource_groups (name, description, is_active) VALUES ($1, $2, $3)`,
        [g.name, g.description ?? '', g.is_active ?? true]);
    } catch (e) {
      if ((e as { code?: string }).code === '23505') throw new Conflict(`resource group ${JSON.stringify(g.name)} exists`);
      throw e;
    }
    await this.putOptions(g.name, pickOptions(g));
    return this.get(g.name);
  }

  async update(name: string, g: { description?: string; is_active?: boolean } & SchedulerOptionsPatch): Promise<ResourceGroup> {
    const r = await this.deps.db.query(
      `UPDATE resource_groups SET description = COALESCE($2, description), is_active = COALESCE($3, is_active) WHERE name = $1`,
      [name, g.description ?? null, g.is_active ?? null]);
    if (!r.rowCount) throw new NotFound(`no resource group ${JSON.stringify(name)}`);
    const patch = pickOptions(g);
    if (Object.keys(patch).length) await this.putOptions(name, { ...this.options.get(name), ...patch });
    return this.get(name);
  }

  async delete(name: string): Promise<void> {
    if (name === 'default') throw new Conflict('the default resource group cannot be deleted');
    const used = await this.deps.db.query(
      `SELECT 1 FROM agents WHERE resource_group = $1 AND status <> 'TERMINATED'
       UNION ALL SELECT 1 FROM sessions WHERE resource_group = $1 LIMIT 1`, [name]);
    if (used.rowCount) throw new Conflict(`resource group ${JSON.stringify(name)} has agents or sessions`);
    const r = await this.deps.db.query(`DELETE FROM resource_groups WHERE name = $1`, [name]);
    if (!r.rowCount) throw new NotFound(`no resource group ${JSON.stringify(name)}`);
    await this.deps.config.delete(RESOURCE_GROUP_PREFIX + name);
  }

  /** Refuses a list naming keypairs that do not exist, naming them (a typo is not "done"). */
  private async requireKeypairs(accessKeys: string[]): Promise<void> {
    const known = new Set((await this.deps.db.query<{ access_key: string }>(`SELECT access_key FROM keypairs WHERE access_key = ANY($1::text[])`, [accessKeys])).rows.map((r) => r.access_key));
    const unknown = accessKeys.filter((k) => !known.has(k));
    if (unknown.length) throw new InvalidAPIParameters(`access_keys: no keypair ${unknown.map((k) => JSON.stringify(k)).join(', ')}`);
  }

  /** Give keypairs the group (idempotent). */
  async allow(name: string, accessKeys: string[]): Promise<ResourceGroup> {
    await this.get(name);
    await this.requireKeypairs(accessKeys);
    try {
      await this.deps.db.query(
        `INSERT INTO keypair_resource_groups (access_key, resource_group) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING`, [accessKeys, name]);
    } catch (e) {
      if ((e as { code?: string }).code === '23503') throw new InvalidAPIParameters('access_keys: a keypair was removed meanwhile');
      throw e;
    }
    return this.get(name);
  }

  async disallow(name: string, accessKeys: string[]): Promise<ResourceGroup> {
    await this.get(name);
    await this.requireKeypairs(accessKeys);
    await this.deps.db.query(`DELETE FROM keypair_resource_groups WHERE resource_group = $1 AND access_key = ANY($2::text[])`, [name, accessKeys]);
    return this.get(name);
  }

  /**
   * May each keypair create sessions in its resource group? One query for a batch of creates;
   * for each, the error that refuses it (an unknown or inactive group, one not allowed for a
   * non-admin keypair), or undefined. `default` is open to every keypair.
   */
  async checkUse(c: Database | DbClient, uses: Array<{ accessKey: string; name: string }>): Promise<Array<Error | undefined>> {
    const rows = (await c.query<{ access_key: string; name: string; is_active: boolean | null; is_admin: boolean; allowed: boolean }>(
      `SELECT u.access_key, u.name, g.is_active,
              COALESCE((SELECT is_admin FROM keypairs WHERE access_key = u.access_key), false) AS is_admin,
              EXISTS (SELECT 1 FROM keypair_resource_groups WHERE access_key = u.access_key AND resource_group = u.name) AS allowed
         FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS u(access_key, name)
         LEFT JOIN resource_groups g ON g.name = u.name`,
      [uses.map((u) => u.accessKey), uses.map((u) => u.name)],
    )).rows;
    const verdict = new Map(rows.map((r) => [`${r.access_key}/${r.name}`, r]));
    return uses.map(({ accessKey, name }) => {
      const r = verdict.get(`${accessKey}/${name}`);
      if (!r?.is_active) return new InvalidAPIParameters(`unknown resource group ${JSON.stringify(name)}`);
      if (r.is_admin || r.allowed || name === 'default') return undefined;
      return new Forbidden(`resource group ${JSON.stringify(name)} is not allowed for this keypair`);
    });
  }

  private async putOptions(name: string, opts: SchedulerOptionsPatch): Promise<void> {
    this.options.set(name, opts); // this manager sees it at once; the others through the watch
    await this.deps.config.put(RESOURCE_GROUP_PREFIX + name, JSON.stringify(opts));
  }

  private fromRow(r: GroupRow): ResourceGroup {
    return {
      name: r.name, description: r.description, is_active: r.is_active, ...this.optionsOf(r.name),
      allowed_keypairs: (r.allowed_keypairs ?? []).filter((k): k is string => !!k).sort(), created_at: r.created_at.toISOString(),
    };
  }
}

interface GroupRow { name: string; description: string; is_active: boolean; created_at: Date; allowed_keypairs: Array<string | null> | null }
const SELECT = `SELECT g.name, g.description, g.is_active, g.created_at, array_agg(k.access_key) AS allowed_keypairs
  FROM resource_groups g LEFT JOIN keypair_resource_groups k ON k.resource_group = g.name`;

function pickOptions(g: SchedulerOptionsPatch): SchedulerOptionsPatch {
  const out: SchedulerOptionsPatch = {};
  for (const k of Object.keys(DEFAULT_SCHEDULER_OPTIONS) as Array<keyof SchedulerOptions>) {
    if (g[k] !== undefined) (out as Record<string, unknown>)[k] = g[k];
  }
  return out;
}
