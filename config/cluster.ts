// Cluster config: shared by every manager and agent, kept in etcd under CLUSTER_CONFIG_PREFIX,
// loaded with `flotilla config load <file>` and watched live. Each key has its default and
// meaning here, in one place; a value missing from etcd is its default.
import { ConfigError } from '../schema/errors.ts';

export const CLUSTER_CONFIG_PREFIX = 'flotilla/config/';

type Kind = 'ms' | 'int' | 'string' | 'json' | 'bool';
interface Key { default: unknown; kind: Kind; meaning: string }
const key = <K extends Kind, D>(kind: K, def: D, meaning: string) => ({ kind, default: def, meaning });

export const CLUSTER_KEYS = {
  'heartbeat.interval': key('ms', 1000, 'how often an agent sends a heartbeat'),
  'heartbeat.timeout': key('ms', 3000, 'no heartbeat for this long: the agent is LOST'),
  'agent.reconnect_timeout': key('ms', 2000, 'an agent whose connection closed is LOST unless it registers again within this (or heartbeat.timeout runs out first): a crashed agent process is noticed sooner than a silent one'),
  'agent.lost_grace': key('ms', 60_000, 'how long kernels of a LOST agent wait for it to return before they end in ERROR'),
  'agent.token': key('string', '', 'shared token agents present on the /agent namespace (generated at first manager start when empty)'),
  'rpc.timeout': key('ms', 30_000, 'default acknowledgement timeout of a manager-to-agent RPC'),
  'session.preparing_timeout': key('ms', 15 * 60_000, 'deadline of PREPARING (Backend.AI: 15 min)'),
  'session.creating_timeout': key('ms', 10 * 60_000, 'deadline of CREATING (Backend.AI: 10 min)'),
  'session.terminating_timeout': key('ms', 60_000, 'deadline of TERMINATING before the kernel is forced to TERMINATED'),
  'session.default_max_wait': key('ms', 60_000, 'POST /session waits this long for RUNNING when maxWaitSeconds is 0'),
  'session.stop_grace': key('int', 3, 'seconds docker gives a kernel to stop on SIGTERM before SIGKILL'),
  'session.default_resources': key('json', { cpu: '1', mem: '256m' }, 'resources of a kernel whose request names none'),
  'session.min_resources': key('json', { cpu: '0.01', mem: '16m' }, 'least a kernel may ask for (Docker\'s own floor is 0.01 CPU and 6 MiB; 0 would mean no limit at all); below it POST /session answers 400 invalid-api-params'),
  'session.max_upload_bytes': key('int', 100 * 1024 * 1024, 'largest POST /session/{name}/upload (all its files together); past it: 413 payload-too-large'),
  'scheduler.interval': key('ms', 5_000, 'period of the scheduler\'s safety pass'),
  'images.aliases': key('json', { python: 'flotilla/python:3.11', shell: 'flotilla/shell:1.35' }, 'image aliases users may ask for'),
  'resource_slots': key('json', { cpu: 'count', mem: 'bytes' }, 'known resource slot types (agents may declare more, e.g. cuda.device)'),
  'vfolder.root': key('string', '/var/lib/flotilla/vfolders', 'virtual folder root, the same path on every host'),
  'vfolder.default_quota': key('int', 0, 'size quota in bytes of a folder created without one (0 = none)'),
  'vfolder.upload_expiry': key('ms', 24 * 3600_000, 'how long an unfinished tus upload can be resumed before its token and part file are dropped'),
  'vfolder.download_expiry': key('ms', 3600_000, 'how long a request-download token stays valid'),
  'manager.leader_lease_ttl': key('int', 5, 'seconds of the manager leader lease in etcd'),
  'manager.standby_prepare_interval': key('ms', 1000, 'how often a standby manager rebuilds, from PostgreSQL, the actors of the sessions changed since its last pass, so that a takeover only catches up with the rest'),
  'jobs.idle_check': key('string', '*/10 * * * * *', 'cron (with seconds) of the job that ends idle sessions past their policy\'s idle_timeout'),
  'jobs.lifetime_check': key('string', '*/10 * * * * *', 'cron of the job that ends sessions past their policy\'s max_session_lifetime'),
  'jobs.usage_sample': key('string', '*/30 * * * * *', 'cron of the job that samples kernels\' cpu and memory from Docker stats'),
  'jobs.usage_aggregate': key('string', '0 */5 * * * *', 'cron of the job that rolls usage samples up per keypair and hour'),
  'jobs.retention_prune': key('string', '0 17 * * * *', 'cron of the job that prunes ended sessions past jobs.session_retention'),
  'jobs.transfer_sweep': key('string', '30 * * * * *', 'cron of the job that drops expired virtual folder transfers and the part files of unfinished uploads'),
  'jobs.session_retention': key('int', 30 * 86400, 'seconds an ended session\'s rows (and its usage samples) are kept'),
  'jobs.prune_events': key('bool', false, 'whether the retention prune also deletes the pruned sessions\' events (kept by default)'),
} as const satisfies Record<string, Key>;

export type ClusterKey = keyof typeof CLUSTER_KEYS;
type ValueOf<K extends ClusterKey> = (typeof CLUSTER_KEYS)[K]['kind'] extends 'ms' | 'int' ? number
  : (typeof CLUSTER_KEYS)[K]['kind'] extends 'bool' ? boolean
  : (typeof CLUSTER_KEYS)[K]['kind'] extends 'string' ? string
  : (typeof CLUSTER_KEYS)[K]['default'];
export type ClusterConfig = { [K in ClusterKey]: ValueOf<K> };

export function isClusterKey(k: string): k is ClusterKey { return Object.hasOwn(CLUSTER_KEYS, k); }

/** Parse one stored (string) value; throws ConfigError naming the key. */
export function parseClusterValue(k: ClusterKey, raw: unknown): unknown {
  const spec: Key = CLUSTER_KEYS[k];
  const fail = (why: string): never => { throw new ConfigError(k, `${why}, got ${JSON.stringify(raw)}`); };
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw);
  switch (spec.kind) {
    case 'ms': case 'int': {
      const n = Number(text);
      if (!Number.isFinite(n) || n < 0 || !Number.isInteger(n)) fail('expected a non-negative integer');
      return n;
    }
    case 'bool': return text === 'true' ? true : text === 'false' ? false : fail('expected true or false');
    case 'string': return typeof raw === 'string' ? raw : fail('expected a string');
    case 'json': try { return typeof raw === 'string' ? JSON.parse(raw) : raw; } catch { return fail('expected JSON'); }
  }
}

export function defaultClusterConfig(): ClusterConfig {
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(CLUSTER_KEYS)) out[k] = structuredClone(spec.default);
  return out as ClusterConfig;
}

/** Validate a config file's object (flat dotted keys): unknown keys and bad values are errors. */
export function validateClusterFile(obj: unknown): Partial<ClusterConfig> {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new ConfigError('<file>', 'expected a JSON object of dotted keys');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (!isClusterKey(k)) throw new ConfigError(k, `unknown cluster config key (known: ${Object.keys(CLUSTER_KEYS).join(', ')})`);
    out[k] = parseClusterValue(k, v);
  }
  return out as Partial<ClusterConfig>;
}

/** How a value is stored in etcd: strings as they are, everything else as JSON. */
export function encodeClusterValue(v: unknown): string { return typeof v === 'string' ? v : JSON.stringify(v); }
