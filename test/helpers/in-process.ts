// An in-process manager and one agent on the real PostgreSQL (a database of their own), Redis
// and etcd (a namespace of their own), signed in as the admin keypair; stop() ends sessions
// still running and removes the database.
import { randomBytes } from 'node:crypto';
import { loadProcessSettings } from '../../config/settings.ts';
import { startAgent, type RunningAgent } from '../../runtime/agent/index.ts';
import { createLogger } from '../../runtime/log.ts';
import { startManager, type RunningManager } from '../../runtime/manager/index.ts';
import { Client } from '../../runtime/sdk/index.ts';
import { openStores } from '../../runtime/stores/index.ts';
import type { Stores } from '../../runtime/stores/types.ts';
import { freshDatabase, realServices } from './services.ts';

export interface InProcessCluster {
  tag: string; ak: string; sk: string; databaseUrl: string;
  stores: Stores; m: RunningManager; agent: RunningAgent; client: Client;
  stop(): Promise<void>;
}

export async function startInProcess(name: string): Promise<InProcessCluster> {
  const fresh = await freshDatabase();
  const tag = randomBytes(4).toString('hex');
  const ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
  const sk = randomBytes(20).toString('base64');
  const settings = loadProcessSettings({
    ...process.env, FLOTILLA_DATABASE_URL: fresh.url, FLOTILLA_REDIS_URL: realServices.redisUrl,
    FLOTILLA_ETCD_ENDPOINTS: realServices.etcdEndpoints.join(','), FLOTILLA_ETCD_NAMESPACE: `test/${name}-${tag}/`,
    FLOTILLA_MANAGER_PORT: '0', FLOTILLA_ADMIN_ACCESS_KEY: ak, FLOTILLA_ADMIN_SECRET_KEY: sk,
  });
  const log = createLogger('test', 'silent');
  const stores = await openStores(settings);
  const m = await startManager({ settings, stores, log });
  const agent = await startAgent({ agentId: `i-${name}-${tag}`, managerUrls: [m.url], token: m.agentToken, resourceGroup: 'default', slots: 'cpu=2,mem=4g', log });
  await agent.registered;
  return {
    tag, ak, sk, databaseUrl: fresh.url, stores, m, agent,
    client: new Client({ endpoint: m.url, accessKey: ak, secretKey: sk }),
    async stop() {
      for (const id of m.supervisor.liveSessionIds()) m.supervisor.send(id, { type: 'TERMINATE', reason: 'test-cleanup', forced: true });
      const until = Date.now() + 15_000;
      while (m.supervisor.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      await agent.close();
      await m.close();
      await stores.close();
      await fresh.drop();
    },
  };
}
