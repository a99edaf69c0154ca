// Admin routes (`/admin/...`) and the caller's usage report, as `client.admin` and
// `client.usage()`. Admin routes answer 403 to a non-admin keypair.
import type { Client } from './client.ts';

export interface KeypairInfo {
  access_key: string; user_id: string; email: string; role: string; is_admin: boolean; is_active: boolean;
  resource_policy: string; rate_limit: number; created_at: string; last_used: string | null;
}
export interface CreatedKeypair extends KeypairInfo { secret_key: string }
export interface ResourcePolicy {
  name: string; max_concurrent_sessions: number; total_resource_slots: Record<string, string>;
  max_pending_session_count: number | null; max_containers_per_session: number; idle_timeout: number;
  max_session_lifetime: number; max_vfolder_count: number;
}
export type ResourcePolicyInput = Partial<Omit<ResourcePolicy, 'name' | 'total_resource_slots'>> & { total_resource_slots?: Record<string, string | number> };
export interface ResourceGroupOptions {
  /** Sequencer: `fifo` (default), `lifo` or `drf`. */
  scheduler: 'fifo' | 'lifo' | 'drf';
  /** `dispersed` (default), `concentrated` or `roundrobin`. */
  agent_selector: 'dispersed' | 'concentrated' | 'roundrobin';
  /** Seconds a session may stay PENDING before it is CANCELLED (`pending-timeout`); 0 (default): forever. */
  pending_timeout: number;
  /** Failed passes after which a session stops blocking the ones behind it; 0 (default): strict order. */
  num_retries_to_skip: number;
}
export interface ResourceGroup extends ResourceGroupOptions {
  name: string; description: string; is_active: boolean; allowed_keypairs: string[]; created_at: string;
}
export type ResourceGroupInput = Partial<ResourceGroupOptions> & { description?: string; is_active?: boolean };
export interface JobStatus {
  name: string; schedule: string; running: boolean; nextRun: string | null; lastStarted: string | null; lastFinished: string | null;
  lastOutcome: 'ok' | 'failed' | null; lastResult: unknown; lastError: string | null; runs: number; failures: number;
}
export interface UsageReport {
  access_key: string; start: string; end: string;
  hours: Array<{ hour: string; cpu_used_ms: number; mem_byte_hours: number; session_count: number }>;
  total: { cpu_used_ms: number; mem_byte_hours: number };
}

const ak = (k: string) => encodeURIComponent(k);

/** Admin routes; use them as `client.admin` with an admin keypair. */
export class Admin {
  readonly #client: Client;
  constructor(client: Client) { this.#client = client; }

  /**
   * Create a keypair for a user (created too when the email is new). The answer carries the
   * secret key: the only time it is ever shown.
   *
   * @example
   * const kp = await client.admin.createKeypair({ email: 'ann@example.com', resource_policy: 'students' });
   * console.log(kp.access_key, kp.secret_key);
   */
  createKeypair(opts: { email: string; is_admin?: boolean; resource_policy?: string; rate_limit?: number }): Promise<CreatedKeypair> {
    return this.#client.request('POST', '/admin/keypairs', { body: opts });
  }

  /**
   * Every keypair, without secrets.
   *
   * @example
   * for (const k of await client.admin.listKeypairs()) console.log(k.access_key, k.email, k.is_active);
   */
  listKeypairs(): Promise<KeypairInfo[]> { return this.#client.request('GET', '/admin/keypairs'); }

  /**
   * Change a keypair; `is_active: false` refuses its next request.
   *
   * @example
   * await client.admin.updateKeypair('AKIAIOSFODNN7EXAMPLE', { rate_limit: 1000 });
   */
  updateKeypair(accessKey: string, change: { is_active?: boolean; is_admin?: boolean; resource_policy?: string; rate_limit?: number }): Promise<KeypairInfo> {
    return this.#client.request('PATCH', `/admin/keypairs/${ak(accessKey)}`, { body: change });
  }

  /**
   * Deactivate a keypair (its requests are refused from now on).
   *
   * @example
   * await client.admin.deactivateKeypair('AKIAIOSFODNN7EXAMPLE');
   */
  deactivateKeypair(accessKey: string): Promise<KeypairInfo> { return this.#client.request('POST', `/admin/keypairs/${ak(accessKey)}/deactivate`); }

  /**
   * Delete a keypair that has no live sessions.
   *
   * @example
   * await client.admin.deleteKeypair('AKIAIOSFODNN7EXAMPLE');
   */
  async deleteKeypair(accessKey: string): Promise<void> { await this.#client.request('DELETE', `/admin/keypairs/${ak(accessKey)}`); }

  /**
   * Create a keypair resource policy (unnamed limits take the schema's defaults).
   *
   * @example
   * await client.admin.createResourcePolicy('students', { max_concurrent_sessions: 2, total_resource_slots: { cpu: 4, mem: '8g' }, idle_timeout: 3600 });
   */
  createResourcePolicy(name: string, limits: ResourcePolicyInput = {}): Promise<ResourcePolicy> {
    return this.#client.request('POST', '/admin/resource-policies', { body: { name, ...limits } });
  }

  /**
   * Change some limits of a policy; keypairs under it get them at their next request.
   *
   * @example
   * await client.admin.updateResourcePolicy('students', { idle_timeout: 600 });
   */
  updateResourcePolicy(name: string, limits: ResourcePolicyInput): Promise<ResourcePolicy> {
    return this.#client.request('PATCH', `/admin/resource-policies/${encodeURIComponent(name)}`, { body: limits });
  }

  /**
   * Every resource policy.
   *
   * @example
   * const policies = await client.admin.listResourcePolicies();
   */
  listResourcePolicies(): Promise<ResourcePolicy[]> { return this.#client.request('GET', '/admin/resource-policies'); }

  /**
   * Delete a policy no keypair uses.
   *
   * @example
   * await client.admin.deleteResourcePolicy('students');
   */
  async deleteResourcePolicy(name: string): Promise<void> { await this.#client.request('DELETE', `/admin/resource-policies/${encodeURIComponent(name)}`); }

  /**
   * Create a resource group; its scheduler options apply live on every manager.
   *
   * @example
   * await client.admin.createResourceGroup('gpu', { scheduler: 'drf', agent_selector: 'concentrated', pending_timeout: 600 });
   */
  createResourceGroup(name: string, opts: ResourceGroupInput = {}): Promise<ResourceGroup> {
    return this.#client.request('POST', '/admin/resource-groups', { body: { name, ...opts } });
  }

  /**
   * Change a group's description, activity or scheduler options (the scheduler uses them at its next pass).
   *
   * @example
   * await client.admin.updateResourceGroup('default', { num_retries_to_skip: 3 });
   */
  updateResourceGroup(name: string, opts: ResourceGroupInput): Promise<ResourceGroup> {
    return this.#client.request('PATCH', `/admin/resource-groups/${encodeURIComponent(name)}`, { body: opts });
  }

  /**
   * Every resource group with its options and the keypairs given it.
   *
   * @example
   * for (const g of await client.admin.listResourceGroups()) console.log(g.name, g.scheduler, g.agent_selector);
   */
  listResourceGroups(): Promise<ResourceGroup[]> { return this.#client.request('GET', '/admin/resource-groups'); }

  /**
   * Delete a group no agent or session uses.
   *
   * @example
   * await client.admin.deleteResourceGroup('old');
   */
  async deleteResourceGroup(name: string): Promise<void> { await this.#client.request('DELETE', `/admin/resource-groups/${encodeURIComponent(name)}`); }

  /**
   * Let keypairs create sessions in a group (every keypair may use `default`; admins every group).
   *
   * @example
   * await client.admin.allowResourceGroup('gpu', ['AKIAIOSFODNN7EXAMPLE']);
   */
  allowResourceGroup(name: string, accessKeys: string[]): Promise<ResourceGroup> {
    return this.#client.request('POST', `/admin/resource-groups/${encodeURIComponent(name)}/keypairs`, { body: { access_keys: accessKeys } });
  }

  /**
   * Take a group back from keypairs.
   *
   * @example
   * await client.admin.disallowResourceGroup('gpu', ['AKIAIOSFODNN7EXAMPLE']);
   */
  disallowResourceGroup(name: string, accessKeys: string[]): Promise<ResourceGroup> {
    return this.#client.request('DELETE', `/admin/resource-groups/${encodeURIComponent(name)}/keypairs`, { body: { access_keys: accessKeys } });
  }

  /**
   * The periodic jobs: schedule, last run and outcome.
   *
   * @example
   * for (const j of await client.admin.jobs()) console.log(j.name, j.lastOutcome, j.lastFinished);
   */
  jobs(): Promise<JobStatus[]> { return this.#client.request('GET', '/admin/jobs'); }

  /**
   * Run a periodic job now and get its result.
   *
   * @example
   * const { result } = await client.admin.runJob('usage-sample');
   */
  runJob(name: string): Promise<{ name: string; result: unknown }> { return this.#client.request('POST', `/admin/jobs/${encodeURIComponent(name)}/run`); }
}

/**
 * The caller's usage per hour in [start, end) (`GET /resource/usage`); admins may pass `ownerAccessKey`.
 *
 * @example
 * const u = await usage(client, { start: new Date(Date.now() - 86400_000), end: new Date() });
 */
export function usage(client: Client, opts: { start: Date; end: Date; ownerAccessKey?: string }): Promise<UsageReport> {
  return client.request('GET', '/resource/usage', { query: { start: opts.start.toISOString(), end: opts.end.toISOString(), owner_access_key: opts.ownerAccessKey } });
}
