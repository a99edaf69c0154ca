// Opens the three stores from process settings: the real services when their addresses are
// set, the all-in-one stand-ins otherwise (only when the caller allows it: `flotilla up`).
import { join } from 'node:path';
import type { ProcessSettings } from '../../config/settings.ts';
import { ConfigError } from '../../schema/errors.ts';
import { openEtcd } from './etcd.ts';
import { openMemoryConfig } from './memory-config.ts';
import { openMemoryLiveness } from './memory-liveness.ts';
import { startEmbeddedPostgres } from './pglite.ts';
import { openPostgres } from './postgres.ts';
import { openRedis } from './redis.ts';
import type { Database, Stores } from './types.ts';

export type { Database, DbClient, LivenessStore, ConfigStore, Leadership, Stores } from './types.ts';

export interface OpenStoresOptions {
  /** Use PGlite and in-process stand-ins for whatever has no address (the all-in-one mode). */
  embedded?: boolean;
  /** Keep the embedded database in memory instead of under dataDir (tests). */
  inMemory?: boolean;
  onError?: (store: string, err: Error) => void;
}

/** The all-in-one mode's database (PGlite) under dataDir (undefined: in memory); close() stops it all. */
export async function embeddedDatabase(dataDir: string | undefined): Promise<Database> {
  const embedded = await startEmbeddedPostgres(dataDir === undefined ? undefined : join(dataDir, 'pgdata'));
  return { ...embedded.db, close: embedded.close };
}

export async function openStores(settings: ProcessSettings, opts: OpenStoresOptions = {}): Promise<Stores> {
  const need = (value: unknown, name: string) => {
    if (!value && !opts.embedded) throw new ConfigError(name, 'is required (or run the all-in-one mode, `flotilla up`)');
  };
  need(settings.databaseUrl, 'FLOTILLA_DATABASE_URL');
  need(settings.redisUrl, 'FLOTILLA_REDIS_URL');
  need(settings.etcdEndpoints.length, 'FLOTILLA_ETCD_ENDPOINTS');
  const onError = (store: string) => (e: Error) => opts.onError?.(store, e);

  const db = settings.databaseUrl
    ? openPostgres({ url: settings.databaseUrl, onError: onError('postgres') })
    : await embeddedDatabase(opts.inMemory ? undefined : settings.dataDir);
  const liveness = settings.redisUrl ? openRedis({ url: settings.redisUrl, onError: onError('redis') }) : openMemoryLiveness();
  const config = settings.etcdEndpoints.length
    ? openEtcd({ endpoints: settings.etcdEndpoints, namespace: settings.etcdNamespace, onError: onError('etcd') })
    : openMemoryConfig();
  return {
    db, liveness, config,
    async close() {
      await Promise.allSettled([db.close(), liveness.close(), config.close()]);
    },
  };
}
