// Cluster config and manager leader election on etcd (etcd3 client).
import { Etcd3 } from 'etcd3';
import { ServiceUnavailable } from '../../schema/errors.ts';
import type { ConfigStore, Leadership } from './types.ts';

export interface EtcdOptions { endpoints: string[]; namespace?: string; dialTimeoutMs?: number; callTimeoutMs?: number; onError?: (err: Error) => void }

export function openEtcd(opts: EtcdOptions): ConfigStore {
  const root = new Etcd3({
    hosts: opts.endpoints,
    dialTimeout: opts.dialTimeoutMs ?? 3000,
    // Unary calls get a deadline so a dead etcd is an error, not a hang; watches are streams.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + (opts.callTimeoutMs ?? 5000) }),
  });
  const client = opts.namespace ? root.namespace(opts.namespace) : root;
  const wrap = async <T>(what: () => Promise<T>): Promise<T> => {
    try {
      return await what();
    } catch (e) {
      const err = e as Error;
      if (/Unavailable|Deadline|ECONNREFUSED|No connection|failed to connect|GRPC/i.test(`${err.name} ${err.message}`)) {
        throw new ServiceUnavailable(`etcd is unavailable: ${err.message}`);
      }
      throw e;
    }
  };

  return {
    kind: 'etcd',
    get: (key) => wrap(async () => (await client.get(key).string()) ?? undefined),
    getPrefix: (prefix) => wrap(() => client.getAll().prefix(prefix).strings()),
    put: (key, value) => wrap(async () => { await client.put(key).value(value); }),
    delete: (key) => wrap(async () => { await client.delete().key(key); }),
    watchPrefix: (prefix, onChange) => wrap(async () => {
      const watcher = await client.watch().prefix(prefix).create();
      watcher.on('put', (kv) => onChange(kv.key.toString(), kv.value.toString()));
      watcher.on('delete', (kv) => onChange(kv.key.toString(), undefined));
      // The client reconnects watches by itself; errors are reported, not thrown.
      watcher.on('error', (e) => opts.onError?.(e));
      return async () => { await watcher.cancel(); };
    }),
    campaign(name, candidate, ttlSeconds): Leadership {
      const campaign = client.election(name, ttlSeconds).campaign(candidate);
      let isLeader = false;
      const lost: Array<(e: Error) => void> = [];
      const elected = new Promise<void>((resolve, reject) => {
        campaign.on('elected', () => { isLeader = true; resolve(); });
        campaign.on('error', (e: Error) => {
          if (isLeader) { isLeader = false; for (const cb of lost.splice(0)) cb(e); }
          else reject(new ServiceUnavailable(`etcd election ${name}: ${e.message}`));
        });
      });
      elected.catch(() => undefined); // observed by whoever awaits it
      return {
        elected,
        get isLeader() { return isLeader; },
        onLost: (cb) => { lost.push(cb); },
        resign: async () => { isLeader = false; await campaign.resign().catch(() => undefined); },
      };
    },
    leader: (name) => wrap(async () => client.election(name).leader().catch((e: Error) => {
      if (e.name === 'NotCampaigningError' || /no leader/i.test(e.message)) return undefined;
      throw e;
    })),
    ping: () => wrap(async () => { await root.maintenance.status(); }),
    close: async () => { root.close(); },
  };
}
