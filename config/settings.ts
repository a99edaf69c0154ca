// Per-process settings: store addresses, ports, ids. Every setting, its default and its meaning
// live in this one table; they come from the environment (names as DESIGN.md §10) or from a JSON
// file named by FLOTILLA_CONFIG_FILE (keys: the same names). The environment wins over the file.
// A wrong value fails at start with a ConfigError that names the setting.
import { readFileSync } from 'node:fs';
import { ConfigError } from '../schema/errors.ts';

type Parser<T> = (raw: string, name: string) => T;

const str: Parser<string> = (raw) => raw;
const optStr: Parser<string | undefined> = (raw) => (raw === '' ? undefined : raw);
const port: Parser<number> = (raw, name) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(name, `expected a TCP port (0-65535), got ${JSON.stringify(raw)}`);
  return n;
};
const url = (protocols: string[]): Parser<string | undefined> => (raw, name) => {
  if (raw === '') return undefined;
  let u: URL;
  try { u = new URL(raw); } catch { throw new ConfigError(name, `expected a URL, got ${JSON.stringify(raw)}`); }
  if (!protocols.includes(u.protocol)) throw new ConfigError(name, `expected a ${protocols.join(' or ')} URL, got ${JSON.stringify(raw)}`);
  return raw;
};
const urlList = (protocols: string[]): Parser<string[]> => (raw, name) =>
  raw.split(',').map((s) => s.trim()).filter(Boolean).map((s) => url(protocols)(s, name) as string);
const logLevel: Parser<string> = (raw, name) => {
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(raw)) throw new ConfigError(name, `expected a pino log level, got ${JSON.stringify(raw)}`);
  return raw;
};

interface Setting<T> { env: string; default: string; meaning: string; parse: Parser<T> }
const setting = <T>(env: string, def: string, meaning: string, parse: Parser<T>): Setting<T> => ({ env, default: def, meaning, parse });

export const SETTINGS = {
  databaseUrl: setting('FLOTILLA_DATABASE_URL', '', 'PostgreSQL URL of the durable store; unset in `flotilla up` = embedded PGlite', url(['postgres:', 'postgresql:'])),
  redisUrl: setting('FLOTILLA_REDIS_URL', '', 'Redis URL for liveness, counters and fan-out; unset in `flotilla up` = in-process stand-in', url(['redis:', 'rediss:'])),
  etcdEndpoints: setting('FLOTILLA_ETCD_ENDPOINTS', '', 'comma-separated etcd endpoints for cluster config and leader election; unset in `flotilla up` = in-process stand-in', urlList(['http:', 'https:'])),
  etcdNamespace: setting('FLOTILLA_ETCD_NAMESPACE', '', 'prefix of every key this cluster keeps in etcd (several clusters can share one etcd)', str),
  managerHost: setting('FLOTILLA_MANAGER_HOST', '127.0.0.1', 'address the manager listens on', str),
  managerPort: setting('FLOTILLA_MANAGER_PORT', '8081', 'manager HTTP port (0 = any free port)', port),
  managerId: setting('FLOTILLA_MANAGER_ID', '', 'this manager\'s id in elections and logs (default: host:pid)', optStr),
  managerUrls: setting('FLOTILLA_MANAGER_URLS', 'http://127.0.0.1:8081', 'comma-separated manager addresses agents and the SDK try (first reachable leader wins)', urlList(['http:', 'https:'])),
  adminAccessKey: setting('FLOTILLA_ADMIN_ACCESS_KEY', '', 'at first start: the admin keypair\'s access key (generated when unset)', optStr),
  adminSecretKey: setting('FLOTILLA_ADMIN_SECRET_KEY', '', 'at first start: the admin keypair\'s secret key (generated when unset)', optStr),
  accessKey: setting('FLOTILLA_ACCESS_KEY', '', 'the CLI\'s access key (Backend.AI clients call it BACKEND_ACCESS_KEY)', optStr),
  secretKey: setting('FLOTILLA_SECRET_KEY', '', 'the CLI\'s secret key', optStr),
  dataDir: setting('FLOTILLA_DATA_DIR', './.flotilla', 'data of the all-in-one mode (embedded database, generated keys)', str),
  vfolderRoot: setting('FLOTILLA_VFOLDER_ROOT', '', 'virtual folder root (overrides the cluster config vfolder.root)', optStr),
  agentId: setting('FLOTILLA_AGENT_ID', '', 'this agent\'s id (default: i-<hostname>)', optStr),
  agentToken: setting('FLOTILLA_AGENT_TOKEN', '', 'token agents present to the manager (default: read from etcd agent.token)', optStr),
  agentSlots: setting('FLOTILLA_AGENT_SLOTS', '', 'capacity this agent declares, e.g. cpu=4,mem=8g,cuda.device=1 (default: the host\'s cores and memory)', optStr),
  resourceGroup: setting('FLOTILLA_RESOURCE_GROUP', 'default', 'resource group this agent joins', str),
  logLevel: setting('FLOTILLA_LOG_LEVEL', 'info', 'pino log level', logLevel),
  secretEncryptionKey: setting('FLOTILLA_SECRET_ENCRYPTION_KEY', '', 'key that encrypts keypair secrets at rest (default: derived from the data dir\'s generated key)', optStr),
} as const;

export type ProcessSettings = { [K in keyof typeof SETTINGS]: (typeof SETTINGS)[K] extends Setting<infer T> ? T : never };

/** Read every process setting from env (and the optional JSON file), applying defaults in one place. */
export function loadProcessSettings(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Record<string, string>> = {}): ProcessSettings {
  let file: Record<string, unknown> = {};
  const path = env.FLOTILLA_CONFIG_FILE;
  if (path) {
    try { file = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { throw new ConfigError('FLOTILLA_CONFIG_FILE', `cannot read ${path}: ${(e as Error).message}`); }
  }
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(SETTINGS) as [string, Setting<unknown>][]) {
    const fromFile = file[s.env];
    const raw = overrides[s.env] ?? env[s.env] ?? (fromFile === undefined ? undefined : String(fromFile)) ?? s.default;
    out[key] = s.parse(raw, s.env);
  }
  return out as ProcessSettings;
}
