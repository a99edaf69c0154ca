// Real flotilla processes for end-to-end tests: a manager and agents as child processes of
// `bin/flotilla.js`, on the real PostgreSQL (a database of their own), Redis and etcd (a key
// namespace of their own), so tests can kill -9 them and start them again.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { openEtcd } from '../../runtime/stores/etcd.ts';
import { CLUSTER_CONFIG_PREFIX, encodeClusterValue } from '../../config/cluster.ts';
import { nodeFlagsFor } from '../../runtime/manager/node-flags.ts';
import { Client } from '../../runtime/sdk/index.ts';
import { freshDatabase, realServices } from './services.ts';
import { eventually } from './suite.ts';

const BIN = fileURLToPath(new URL('../../bin/flotilla.js', import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export interface Proc { child: ChildProcess; output: () => string; exited: Promise<number | null> }

function run(args: string[], env: Record<string, string>, ready: RegExp, timeoutMs = 60_000): Promise<Proc & { match: RegExpMatchArray }> {
  const child = spawn(process.execPath, [...nodeFlagsFor(args[0]), BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} not ready within ${timeoutMs} ms:\n${out.slice(-3000)}`)), timeoutMs);
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = out.match(ready);
      if (m) { clearTimeout(timer); resolve({ child, output: () => out, exited, match: m }); }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`${args[0]} exited with ${code} before it was ready:\n${out.slice(-3000)}`)); });
  });
}

export interface TestCluster {
  env: Record<string, string>;
  databaseUrl: string;
  accessKey: string;
  secretKey: string;
  manager: Proc & { url: string };
  agents: Map<string, Proc>;
  client: Client;
  startManager(): Promise<void>;
  /** Another manager process (a standby while the first leads), on `port` or a free one; answers /health when it returns. */
  startStandby(port?: number): Promise<Proc & { url: string }>;
  /** Agents dial these managers in turn (default: the first manager's address). */
  agentManagerUrls?: string[];
  startAgent(id: string, slots?: string): Promise<Proc>;
  setConfig(values: Record<string, unknown>): Promise<void>;
  stop(): Promise<void>;
}

/** A manager (and no agents yet) on a fresh database and etcd namespace. */
export async function startCluster(opts: { config?: Record<string, unknown> } = {}): Promise<TestCluster> {
  const db = await freshDatabase();
  const tag = randomBytes(4).toString('hex');
  const accessKey = `AKTEST${tag.toUpperCase()}${'0'.repeat(6)}`.slice(0, 20);
  const secretKey = randomBytes(20).toString('hex');
  const env: Record<string, string> = {
    FLOTILLA_DATABASE_URL: db.url,
    FLOTILLA_REDIS_URL: realServices.redisUrl,
    FLOTILLA_ETCD_ENDPOINTS: realServices.etcdEndpoints.join(','),
    FLOTILLA_ETCD_NAMESPACE: `test/cluster-${tag}/`,
    FLOTILLA_ADMIN_ACCESS_KEY: accessKey,
    FLOTILLA_ADMIN_SECRET_KEY: secretKey,
    FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'warn',
    FLOTILLA_SECRET_ENCRYPTION_KEY: `test-${tag}`,
  };
  const port = await freePort();
  const etcd = openEtcd({ endpoints: realServices.etcdEndpoints, namespace: env.FLOTILLA_ETCD_NAMESPACE });
  const cluster: TestCluster = {
    env, databaseUrl: db.url, accessKey, secretKey, agents: new Map(),
    manager: undefined as unknown as TestCluster['manager'],
    client: undefined as unknown as Client,
    async startManager() {
      // The same port across restarts: agents dial the address they were given.
      const p = await run(['manager'], { ...env, FLOTILLA_MANAGER_PORT: String(port) }, /manager listening on (http:\/\/\S+)/);
      cluster.manager = Object.assign(p, { url: p.match[1] });
      cluster.client = new Client({ endpoint: p.match[1], accessKey, secretKey });
    },
    async startStandby(standbyPort?: number) {
      standbyPort ??= await freePort();
      const url = `http://127.0.0.1:${standbyPort}`;
      const child = spawn(process.execPath, [...nodeFlagsFor('manager'), BIN, 'manager'], { env: { ...process.env, ...env, FLOTILLA_MANAGER_PORT: String(standbyPort) }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
      child.stderr!.on('data', (b: Buffer) => { out += b.toString(); });
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      await eventually(async () => (await fetch(`${url}/health`)).ok, 60_000, `standby manager at ${url} answers /health`);
      return { child, output: () => out, exited, url };
    },
    async startAgent(id, slots = 'cpu=2,mem=2g') {
      const urls = cluster.agentManagerUrls ?? [cluster.manager.url];
      const p = await run(['agent', '--id', id, '--slots', slots], { ...env, FLOTILLA_MANAGER_URLS: urls.join(',') }, /dialling/);
      cluster.agents.set(id, p);
      // Ready for sessions once the manager lists it connected (with its images).
      await eventually(async () => {
        const list = await cluster.client.request<Array<{ agentId: string; connected: boolean; status: string }>>('GET', '/admin/agents');
        return list.some((a) => a.agentId === id && a.connected && a.status === 'ALIVE');
      }, 30_000, `agent ${id} registered`);
      return p;
    },
    async setConfig(values) {
      for (const [k, v] of Object.entries(values)) await etcd.put(CLUSTER_CONFIG_PREFIX + k, encodeClusterValue(v));
    },
    async stop() {
      const all = [cluster.manager, ...cluster.agents.values()].filter(Boolean);
      for (const p of all) p.child.kill('SIGKILL');
      await Promise.all(all.map((p) => p.exited));
      for (const k of Object.keys(await etcd.getPrefix('').catch(() => ({})))) await etcd.delete(k).catch(() => undefined);
      await etcd.close();
      await db.drop();
    },
  };
  if (opts.config) await cluster.setConfig(opts.config);
  await cluster.startManager();
  return cluster;
}
