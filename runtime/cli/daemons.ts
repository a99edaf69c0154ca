// The long-running commands: `flotilla manager`, `flotilla agent`, and `flotilla up` (the
// all-in-one mode: manager and one agent in this process on PGlite and the in-process
// stand-ins, containers on the real Docker).
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { loadProcessSettings, type ProcessSettings } from '../../config/settings.ts';
import { ConfigError } from '../../schema/errors.ts';
import { startAgent, type RunningAgent } from '../agent/index.ts';
import { createLogger, type Logger } from '../log.ts';
import { startManager } from '../manager/index.ts';
import { MANAGER_NODE_FLAGS, missingManagerFlags } from '../manager/node-flags.ts';
import { Client } from '../sdk/index.ts';
import { openStores } from '../stores/index.ts';
import { openEtcd } from '../stores/etcd.ts';

/** Run until SIGINT/SIGTERM, then close in order. */
function untilSignal(close: () => Promise<void>): void {
  let closing = false;
  const stop = (sig: string) => {
    if (closing) process.exit(1);
    closing = true;
    console.error(`\n${sig}: shutting down (containers keep running; the next start restores them)`);
    close().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function printAdmin(created: { accessKey: string; secretKey: string } | undefined): void {
  if (!created) return;
  console.log('\nThe admin keypair was created (shown this once):');
  console.log(`  FLOTILLA_ACCESS_KEY=${created.accessKey}`);
  console.log(`  FLOTILLA_SECRET_KEY=${created.secretKey}\n`);
}

/** A manager started without its node flags runs, slower under load; say how to start it. */
function warnMissingFlags(log: Logger): void {
  const missing = missingManagerFlags();
  if (missing.length) log.warn({ missing }, `started without ${missing.join(' ')}: run it as \`node ${MANAGER_NODE_FLAGS.join(' ')} bin/flotilla.js …\` (runtime/manager/node-flags.ts says why)`);
}

export function registerDaemonCommands(program: Command): void {
  program.command('manager').description('run a manager against PostgreSQL, Redis and etcd (FLOTILLA_DATABASE_URL, FLOTILLA_REDIS_URL, FLOTILLA_ETCD_ENDPOINTS)')
    .action(async () => {
      const settings = loadProcessSettings();
      const log = createLogger('manager', settings.logLevel);
      warnMissingFlags(log);
      const stores = await openStores(settings, { onError: (store, err) => log.warn({ store, err: err.message }, 'store error') });
      const m = await startManager({ settings, stores, log });
      printAdmin(m.createdAdmin);
      console.log(`manager listening on ${m.url}`);
      untilSignal(async () => { await m.close(); await stores.close(); });
    });

  program.command('agent').description('run an agent daemon that dials the managers in FLOTILLA_MANAGER_URLS')
    .option('--slots <slots>', 'capacity to declare, e.g. cpu=4,mem=8g (default: FLOTILLA_AGENT_SLOTS or the host)')
    .option('--id <id>', 'agent id (default: FLOTILLA_AGENT_ID or i-<hostname>; simulated: i-sim-<hostname>-<pid>)')
    .option('--simulated', 'a simulated agent, for scale tests and benchmarks: the real process and protocol, but kernels only pretend (no containers, no code runs); needs --slots')
    .option('--count <n>', 'with --simulated: run n agents in this process, ids <id>-1 … <id>-n', '1')
    .option('--images <names>', 'with --simulated: comma-separated image names to offer (default: the default image aliases\' full names)')
    .option('--delay-ms <ms>', 'with --simulated: how long a kernel create, destroy or restart takes', '2')
    .action(async (opts: { slots?: string; id?: string; simulated?: boolean; count: string; images?: string; delayMs: string }) => {
      const settings = loadProcessSettings();
      const log = createLogger('agent', settings.logLevel);
      const slots = opts.slots ?? settings.agentSlots;
      const count = Number(opts.count);
      const delayMs = Number(opts.delayMs);
      if (!opts.simulated && (opts.count !== '1' || opts.images || opts.delayMs !== '2')) throw new ConfigError('--simulated', '--count, --images and --delay-ms apply only to a simulated agent');
      if (opts.simulated) {
        if (!slots) throw new ConfigError('--slots', 'is required with --simulated (the capacity it pretends to have, e.g. cpu=64,mem=256g)');
        if (!Number.isInteger(count) || count < 1 || count > 10_000) throw new ConfigError('--count', `expected an integer from 1 to 10000, got ${JSON.stringify(opts.count)}`);
        if (!Number.isFinite(delayMs) || delayMs < 0) throw new ConfigError('--delay-ms', `expected a non-negative number, got ${JSON.stringify(opts.delayMs)}`);
      }
      const token = settings.agentToken ?? await tokenFromEtcd(settings);
      const baseId = opts.id ?? settings.agentId ?? (opts.simulated ? `i-sim-${hostname()}-${process.pid}` : undefined);
      const simulated = opts.simulated ? { delayMs, ...(opts.images ? { images: opts.images.split(',').map((s) => s.trim()).filter(Boolean) } : {}) } : undefined;
      const agents: RunningAgent[] = [];
      for (let i = 1; i <= count; i++) {
        const agentId = count > 1 ? `${baseId}-${i}` : baseId;
        agents.push(await startAgent({ agentId, managerUrls: settings.managerUrls, token, resourceGroup: settings.resourceGroup, slots, log, simulated }));
      }
      for (const agent of agents) console.log(`${opts.simulated ? 'simulated agent' : 'agent'} ${agent.agentId} dialling ${settings.managerUrls.join(', ')}`);
      untilSignal(async () => { await Promise.all(agents.map((a) => a.close())); });
    });

  program.command('up').description('the all-in-one mode: manager + agent in this process, embedded stores, real Docker; starts a session and stays up')
    .option('--no-session', 'do not start the quick-start session')
    .action(async (opts: { session: boolean }) => {
      const settings = loadProcessSettings();
      const log = createLogger('flotilla-up', settings.logLevel === 'info' ? 'warn' : settings.logLevel);
      warnMissingFlags(log);
      mkdirSync(settings.dataDir, { recursive: true });
      const withKey: ProcessSettings = {
        ...settings, secretEncryptionKey: settings.secretEncryptionKey ?? dataDirSecret(settings.dataDir),
        // All-in-one keeps everything it owns under its data dir, folders too (two instances on one host share nothing).
        vfolderRoot: settings.vfolderRoot || join(resolve(settings.dataDir), 'vfolders'),
      };

      const { buildImages } = await import('../../images/build.ts');
      await buildImages({ onProgress: (line: string) => console.log(`  ${line}`) });

      const stores = await openStores(withKey, { embedded: true });
      const describe = (kind: string, name: string) => `${name} (${kind === 'postgres' || kind === 'redis' || kind === 'etcd' ? 'external' : 'embedded'})`;
      console.log(`stores: ${describe(stores.db.kind, 'PostgreSQL ' + stores.db.kind)}, ${describe(stores.liveness.kind, 'liveness ' + stores.liveness.kind)}, ${describe(stores.config.kind, 'config ' + stores.config.kind)}`);
      const m = await startManager({ settings: withKey, stores, log });
      const agent = await startAgent({
        agentId: settings.agentId ?? 'i-all-in-one', managerUrls: [m.url], token: m.agentToken, resourceGroup: settings.resourceGroup,
        slots: settings.agentSlots, log,
      });
      await agent.registered;
      const keys = adminKeys(settings.dataDir, m.createdAdmin, settings);
      console.log(`manager: ${m.url}   agent: ${agent.agentId}`);
      if (m.createdAdmin) printAdmin(m.createdAdmin);
      if (keys) console.log(`keys: in ${join(settings.dataDir, 'admin.env')} (source it to use the CLI)`);
      untilSignal(async () => { await agent.close(); await m.close(); await stores.close(); });

      if (opts.session && keys) {
        const client = new Client({ endpoint: m.url, accessKey: keys.accessKey, secretKey: keys.secretKey });
        console.log('starting the quick-start session (python)…');
        const created = await client.sessions.create({ name: 'quickstart', image: 'python', reuseIfExists: true, maxWaitSeconds: 120 });
        const info = await client.sessions.get(created.sessionId);
        console.log(`session ${info.sessionName} (${info.sessionId}) is ${info.status}; kernel container ${info.kernels[0]?.containerId?.slice(0, 12) ?? '-'}`);
        console.log(`history: ${info.statusHistory.map((h) => h.status).join(' → ')}`);
      }
      console.log(`flotilla is up. Ctrl-C stops it; try: source ${join(settings.dataDir, 'admin.env')} && flotilla session ls`);
    });
}

/** The agent token from etcd, for agents started without FLOTILLA_AGENT_TOKEN. */
async function tokenFromEtcd(settings: ProcessSettings): Promise<string> {
  if (!settings.etcdEndpoints.length) throw new ConfigError('FLOTILLA_AGENT_TOKEN', 'is required when FLOTILLA_ETCD_ENDPOINTS is not set');
  const etcd = openEtcd({ endpoints: settings.etcdEndpoints, namespace: settings.etcdNamespace });
  try {
    const token = await etcd.get(`${CLUSTER_CONFIG_PREFIX}agent.token`);
    if (!token) throw new ConfigError('FLOTILLA_AGENT_TOKEN', 'is not set and etcd has no agent.token yet (start a manager first)');
    return token;
  } finally { await etcd.close(); }
}

/** The all-in-one mode keeps its keypair-encryption key in the data dir (its stand-in etcd forgets). */
function dataDirSecret(dataDir: string): string {
  const file = join(dataDir, 'secret.key');
  if (!existsSync(file)) { writeFileSync(file, randomBytes(32).toString('base64')); chmodSync(file, 0o600); }
  return readFileSync(file, 'utf8').trim();
}

/** The admin keys for the quick start: created now, or kept from the first start in admin.env (mode 0600). */
function adminKeys(dataDir: string, created: { accessKey: string; secretKey: string } | undefined, settings: ProcessSettings) {
  const file = join(dataDir, 'admin.env');
  if (created) {
    writeFileSync(file, `export FLOTILLA_ACCESS_KEY=${created.accessKey}\nexport FLOTILLA_SECRET_KEY=${created.secretKey}\nexport FLOTILLA_MANAGER_URLS=http://127.0.0.1:${settings.managerPort}\n`);
    chmodSync(file, 0o600);
    return created;
  }
  if (!existsSync(file)) return settings.adminAccessKey && settings.adminSecretKey ? { accessKey: settings.adminAccessKey, secretKey: settings.adminSecretKey } : undefined;
  const text = readFileSync(file, 'utf8');
  const ak = /FLOTILLA_ACCESS_KEY=(\S+)/.exec(text)?.[1];
  const sk = /FLOTILLA_SECRET_KEY=(\S+)/.exec(text)?.[1];
  return ak && sk ? { accessKey: ak, secretKey: sk } : undefined;
}
